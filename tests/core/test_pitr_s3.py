"""PITR into a real S3-compatible repository (SeaweedFS on 127.0.0.1) with the embedded
PostgreSQL 18: enable, a base backup uploaded, WAL archived by the server's own
archive_command (rclone), a mistaken delete, a restore to the moment before it from the
bucket alone; the archive script never replaces another segment and fails when the
bucket is unreachable."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest

from tests.conftest import Cli
from tests.core.pitr_support import conn, facts, pitr_env, status
from tests.core.s3server import SECRET_KEY, SeaweedS3
from tests.ports import free_port

pytestmark = pytest.mark.timeout(600)
REPO = "s3://backups/movies"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed-pitr"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def pitr(s3: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    root = tmp_path_factory.mktemp("pitr-s3")
    cli = Cli(s3.env(**pitr_env(root), MOVIE_BACKUP_REPO=REPO))
    assert cli("db", "up").exit_code == 0
    r = cli("pitr", "enable", "--yes", "--json")
    assert r.exit_code == 0, r.output
    try:
        yield cli
    finally:
        for x in status(cli)["restores"]:
            cli("pitr", "discard", x["name"], "--yes")
        cli("db", "down")


def _keys(s3: SeaweedS3, prefix: str) -> list[str]:
    return sorted(
        str(m["path"]) for batch in obstore.list(s3.store(), prefix=prefix) for m in batch
    )


def _local(pitr: Cli) -> Path:
    return Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr"


def test_enable_writes_no_secret_where_it_shows(pitr: Cli) -> None:
    st = status(pitr)
    assert st["repository"] == f"{REPO}/pitr"
    assert "s3-wal.sh" in st["archiver"]["archive_command"]
    env = _local(pitr) / "s3-wal" / "s3-wal.env"
    mode = env.stat().st_mode
    assert stat.S_IMODE(mode) == 0o600  # the keys: readable by their owner alone
    assert SECRET_KEY in env.read_text()
    r = pitr("pitr", "status", "--json")
    assert SECRET_KEY not in r.output and SECRET_KEY not in st["archiver"]["archive_command"]


def test_restore_to_a_moment_from_the_bucket_alone(pitr: Cli, s3: SeaweedS3) -> None:
    with conn(pitr) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g")
    r = pitr("backup", "--physical", "--json")
    assert r.exit_code == 0, r.output
    base = json.loads(r.stdout)["base"]
    keys = _keys(s3, "movies/pitr/base/")
    assert f"movies/pitr/base/{base['id']}.meta.json" in keys
    assert f"movies/pitr/base/{base['id']}.base.tar" in keys
    with conn(pitr) as c:
        c.execute("INSERT INTO t SELECT g, 'more' FROM generate_series(2001, 3000) g")
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        noted = row[0].isoformat()
        time.sleep(1.1)
    before = facts(pitr)
    with conn(pitr) as c:  # the mistake
        c.execute("DELETE FROM t WHERE i > 100")
        c.execute("SELECT pg_switch_wal()")
    assert _keys(s3, "movies/pitr/wal/")  # the server's archive_command wrote these
    st = status(pitr)
    assert st["archiver"]["failed_count"] == 0, st["archiver"]
    shutil.rmtree(_local(pitr) / "base")  # the restore reads the bucket, nothing local
    r = pitr("restore", "--physical", "--to-time", noted, "--into", "from-s3", "--json")
    assert r.exit_code == 0, r.output
    restored = json.loads(r.stdout)
    assert restored["base_backup"] == base["id"]
    assert facts(restored["port"], pitr) == before
    assert facts(pitr)[0] == 100  # the running server untouched
    assert pitr("pitr", "discard", "from-s3", "--yes").exit_code == 0


def _script(pitr: Cli, env: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = _local(pitr) / "s3-wal" / "s3-wal.sh"
    return subprocess.run(
        ["sh", str(script), args[0], str(env), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_archive_script_never_overwrites_and_fails_when_unreachable(
    pitr: Cli, s3: SeaweedS3, tmp_path: Path
) -> None:
    env = _local(pitr) / "s3-wal" / "s3-wal.env"
    seg = tmp_path / "0000000900000000000000AA"  # a timeline nobody writes
    seg.write_bytes(os.urandom(4096))
    assert _script(pitr, env, "push", str(seg), seg.name).returncode == 0
    assert _script(pitr, env, "push", str(seg), seg.name).returncode == 0  # a retry
    first = seg.read_bytes()
    seg.write_bytes(os.urandom(4096))
    r = _script(pitr, env, "push", str(seg), seg.name)
    assert r.returncode != 0 and "cannot archive" in r.stderr, r.stderr
    got = obstore.get(s3.store(), f"movies/pitr/wal/{seg.name}").bytes()
    assert bytes(got) == first  # never replaced
    back = tmp_path / "fetched"
    assert _script(pitr, env, "fetch", str(back), seg.name).returncode == 0
    assert back.read_bytes() == first
    assert _script(pitr, env, "fetch", str(back), "0000000900000000000000AB").returncode != 0
    assert SECRET_KEY not in r.stderr

    closed = tmp_path / "closed.env"  # the same settings, nothing listening
    text = env.read_text().replace(s3.endpoint, f"http://127.0.0.1:{free_port()}")
    closed.write_text(text)
    started = time.monotonic()
    r = _script(pitr, closed, "push", str(seg), "0000000900000000000000AC")
    assert r.returncode != 0 and "unreachable" in r.stderr
    assert time.monotonic() - started < 100  # bounded: PostgreSQL retries, not rclone forever


def test_prune_removes_uploads_that_never_finished(pitr: Cli, s3: SeaweedS3) -> None:
    import datetime as dt

    listed = [b["id"] for b in status(pitr)["base_backups"]]
    now = dt.datetime.now(dt.UTC)
    recent = f"base-{now:%Y%m%dT%H%M%S}.000Z"  # as a running upload: never touched
    for base_id in ("base-20000101T000000.000Z", recent):
        obstore.put(s3.store(), f"movies/pitr/base/{base_id}.base.tar", b"half")
    r = pitr("pitr", "prune", "--keep", "5", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["deleted_unfinished"] == ["base-20000101T000000.000Z"]
    keys = _keys(s3, "movies/pitr/base/")
    assert f"movies/pitr/base/{recent}.base.tar" in keys
    assert not any("base-2000" in k for k in keys)
    assert [b["id"] for b in status(pitr)["base_backups"]] == listed


def test_a_hostile_meta_json_is_never_listed(s3: SeaweedS3, tmp_path: Path) -> None:
    """Whoever can write the bucket picks the name and the id: ``..`` (the local side's
    parent, which a restore's download would rmtree) or an id that differs from its
    object's name is not a base backup moviectl made; the genuine one is listed."""
    good = "base-20261202T100000.000Z"
    doc = {
        "id": good,
        "path": "",
        "started_at": "2026-12-02T10:00:00+00:00",
        "finished_at": "2026-12-02T10:00:01+00:00",
        "start_lsn": "0/2000028",
        "end_lsn": "0/2000100",
        "timeline": 1,
        "segment_size": 16777216,
        "server_major": 18,
        "size_bytes": 1,
        "compression": "none",
    }
    store = s3.store()
    hostile = {
        good: doc,
        "..": {**doc, "id": ".."},
        "base-20261202T100001.000Z": {**doc, "id": "../../../victim"},
        "base-20261202T100002.000Z": {**doc, "id": "base-20261202T100002.000Z", "parent": "../x"},
        "base-20261202T100003.000Z": {**doc, "id": "base-20261202T100003.000Z", "finished_at": "x"},
        "base-20261202T100004.000Z": {**doc, "id": "base-20261202T100004.000Z", "end_lsn": None},
        "base-20261202T100005.000Z": {**doc, "id": "base-20261202T100005.000Z", "timeline": "t"},
        "base-20261202T100006.000Z": {**doc, "id": "base-20261202T100006.000Z", "segment_size": 0},
    }
    for name, body in hostile.items():
        obstore.put(store, f"hostile/pitr/base/{name}.meta.json", json.dumps(body).encode())
    cli = Cli(s3.env(**pitr_env(tmp_path), MOVIE_BACKUP_REPO="s3://backups/hostile"))
    r = cli("pitr", "status", "--json")
    assert "Traceback" not in r.output, r.output
    listed = json.loads(r.stdout)["base_backups"]
    assert [b["id"] for b in listed] == [good], listed
