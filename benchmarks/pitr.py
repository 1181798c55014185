"""WAL replay (issue 28: <= 1.2x): `moviectl restore --physical --latest` against bare
PostgreSQL recovery of the same base backup with ``restore_command = 'cp …'``.

An embedded server of its own (`db up`, `pitr enable`, `backup --physical`), then
``--replay-mb`` MB of WAL written by INSERTs and archived. Each moviectl run is a
restore to the end of the archive (unpacking, replay, promotion, its row counts) and a
`pitr discard`; each bare run unpacks the same base backup's tars, writes
``recovery.signal`` and the same ``restore_command``, starts the server with ``pg_ctl``
and waits until it has promoted (``pg_is_in_recovery()`` false), then stops it. Both
run as the server's own user. The figure printed names the WAL size used.

`bench_physical`: `backup --physical` against bare ``pg_basebackup -Ft`` (issue 28: <= 1.1x).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import statistics
import subprocess
import tarfile
import time
from pathlib import Path

import psycopg

from benchmarks.common import MOVIECTL, PG, load1, row, run
from moviectl.infra.ports import free_port

PASSWORD = "bench-pitr-pw"


def _moviectl(env: dict[str, str], *args: str) -> dict[str, object]:
    res = subprocess.run(
        [MOVIECTL, "--json", *args], env=env, capture_output=True, text=True, timeout=3600
    )
    if res.returncode != 0:
        raise SystemExit(f"moviectl {' '.join(args)} exited {res.returncode}: {res.stderr[-3000:]}")
    return dict(json.loads(res.stdout)) if res.stdout.strip() else {}


def _as_server(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    from moviectl.core.servers.cluster import SYSTEM_USER

    return ["runuser", "-u", SYSTEM_USER, "--", *argv]


def _write_wal(port: int, mb: int) -> int:
    """INSERTs until the server has written ``mb`` MB of WAL; the bytes written."""
    dsn = f"host=127.0.0.1 port={port} user=movie password={PASSWORD} dbname=movies"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS replay (i bigint, payload text)")
        start = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        while True:
            c.execute("INSERT INTO replay SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
            done = c.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint", (start,)
            ).fetchone()[0]  # type: ignore[index]
            if done >= mb << 20:
                break
        c.execute("SELECT pg_switch_wal()")
        last = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:  # every segment archived before timing starts
            got = c.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]  # type: ignore[index]
            if got is not None and got[8:24] >= last[8:24]:
                break
            time.sleep(0.5)
        else:
            raise SystemExit("the archiver did not catch up within 600 s")
    return int(done)


def _bare(base: Path, wal: Path, into: Path) -> float:
    """Bare recovery of ``base`` with ``cp`` from ``wal``: the seconds until promoted."""
    shutil.rmtree(into, ignore_errors=True)
    t = time.perf_counter()
    pgdata = into / "pgdata"
    pgdata.mkdir(parents=True, mode=0o700)
    with tarfile.open(base / "base.tar") as tf:
        tf.extractall(pgdata, filter="tar")
    with tarfile.open(base / "pg_wal.tar") as tf:
        tf.extractall(pgdata / "pg_wal", filter="tar")
    (pgdata / "moviectl-pitr.conf").unlink(missing_ok=True)
    port = free_port()
    with open(pgdata / "postgresql.auto.conf", "a") as fh:
        fh.write(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            f'restore_command = \'cp "{wal}/%f" "%p"\'\narchive_mode = off\n'
        )
    (pgdata / "recovery.signal").touch()
    if os.geteuid() == 0:
        from moviectl.core.servers.cluster import SYSTEM_USER

        entry = pwd.getpwnam(SYSTEM_USER)
        for root, dirs, files in os.walk(into):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
        os.chown(into, entry.pw_uid, entry.pw_gid)
    log = into / "log"
    ctl = [str(PG / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "3600"]
    subprocess.run(_as_server([*ctl, "start"]), check=True, capture_output=True)
    dsn = f"host=127.0.0.1 port={port} user=movie password={PASSWORD} dbname=postgres"
    try:
        while True:
            try:
                with psycopg.connect(dsn, connect_timeout=5) as c:
                    if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                        break
            except psycopg.OperationalError:
                pass
            time.sleep(0.1)
        took = time.perf_counter() - t
    finally:
        subprocess.run(_as_server([*ctl, "-m", "fast", "stop"]), capture_output=True)
    shutil.rmtree(into, ignore_errors=True)
    return took


def bench_replay(env: dict[str, str], mb: int, pairs: int, tmp: Path) -> None:
    root = tmp / "replay"
    root.mkdir()
    os.chmod(tmp, 0o755)
    e = {
        **env,
        "MOVIE_DB_BACKEND": "embedded",
        "MOVIE_DB_PORT": str(free_port()),
        "MOVIE_DATA_DIR": str(root / "data"),
        "MOVIE_BACKUP_DIR": str(root / "backups"),
        "MOVIE_DB_PASSWORD": PASSWORD,
    }
    _moviectl(e, "db", "up")
    try:
        _moviectl(e, "pitr", "enable", "--yes")
        base = Path(str(dict(_moviectl(e, "backup", "--physical"))["base"]["path"]))  # type: ignore[index]
        since = load1()
        written = _write_wal(int(e["MOVIE_DB_PORT"]), mb)
        wal = root / "backups" / "pitr" / "wal"
        ours, bare = [], []
        for i in range(pairs):  # alternating: a busy spell hits both alike
            t = time.perf_counter()
            _moviectl(e, "restore", "--physical", "--latest", "--into", f"r{i}")
            ours.append(time.perf_counter() - t)
            _moviectl(e, "pitr", "discard", f"r{i}", "--yes")
            bare.append(_bare(base, wal, root / "bare"))
        a, b = statistics.median(ours), statistics.median(bare)
        row(
            f"restore --physical: {written / 1048576:.0f} MB of WAL replayed (vs pg cp)",
            a,
            b,
            "s",
            "<= 1.2x",
            a <= 1.2 * b,
            since,
        )
    finally:
        _moviectl(e, "db", "down")


def bench_physical(env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    """`backup --physical` (issue 28: <= 1.1x) against bare ``pg_basebackup -Ft -X stream
    -c fast`` of the same server into the same disk, alternating; each copy deleted after."""
    root = tmp / "physical"
    root.mkdir()
    os.chmod(tmp, 0o755)
    port = free_port()
    e = {
        **env,
        "MOVIE_DB_BACKEND": "embedded",
        "MOVIE_DB_PORT": str(port),
        "MOVIE_DATA_DIR": str(root / "data"),
        "MOVIE_BACKUP_DIR": str(root / "backups"),
        "MOVIE_DB_PASSWORD": PASSWORD,
    }
    run([MOVIECTL, "up"], e)
    try:
        _moviectl(e, "pitr", "enable", "--yes")
        took, _ = run([MOVIECTL, "seed", "--sample", str(rows)], e)
        print(f"seeded {rows:,} movies in {took:.1f} s")
        bare_env = {**env, "PGPASSWORD": PASSWORD}
        conninfo = f"host=127.0.0.1 port={port} user=movie dbname=movies"
        since = load1()
        ours, bare = [], []
        for _ in range(pairs):  # alternating: a busy spell hits both alike
            t = time.perf_counter()
            doc = _moviectl(e, "backup", "--physical")
            ours.append(time.perf_counter() - t)
            shutil.rmtree(str(doc["base"]["path"]))  # type: ignore[index]
            out = root / "bare"
            t = time.perf_counter()
            argv = [f"{PG}/pg_basebackup", "-d", conninfo, "-D", str(out), "-Ft"]
            subprocess.run([*argv, "-X", "stream", "-c", "fast"], env=bare_env, check=True)
            bare.append(time.perf_counter() - t)
            shutil.rmtree(out)
        a, b = statistics.median(ours), statistics.median(bare)
        print(
            f"  backup --physical {[round(x, 2) for x in ours]} bare {[round(x, 2) for x in bare]}"
        )
        figure = f"backup --physical: {rows:,} movies (vs pg_basebackup -Ft)"
        row(figure, a, b, "s", "<= 1.1x", a <= 1.1 * b, since)
    finally:
        _moviectl(e, "db", "down")
