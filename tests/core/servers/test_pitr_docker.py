"""The README's disaster-recovery sequence on the Docker backend (PostgreSQL 15 image):
enable → base backup → a mistaken delete → restore to the moment before → promote; then
the restore drill of the new timeline's base backup."""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, wait_for
from tests.core.pitr_support import PASSWORD, conn, facts, status
from tests.ports import free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


def _require(reason: str) -> None:
    if os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"MOVIECTL_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image() -> str:
    """Module scope: read before the per-test isolation clears MOVIE_* variables."""
    from moviectl.core.servers.docker_engine import engine_answers

    if not engine_answers():
        _require("no Docker engine answers")
    found = os.environ.get("MOVIE_DB_IMAGE")
    if not found:
        _require("MOVIE_DB_IMAGE is not set")
    return str(found)


@pytest.fixture
def dk(image: str, tmp_path: Path) -> Iterator[Cli]:
    cli = Cli(
        {
            "MOVIE_DB_BACKEND": "docker",
            "MOVIE_DB_IMAGE": image,
            "MOVIE_DB_PORT": str(free_port()),
            "MOVIE_DB_PASSWORD": PASSWORD,
            "MOVIE_COMPOSE_PROJECT": f"mpitr{secrets.token_hex(4)}",
            "MOVIE_DATA_DIR": str(tmp_path / "data"),
            "MOVIE_BACKUP_DIR": str(tmp_path / "backups"),
        }
    )
    try:
        yield cli
    finally:
        for x in status(cli)["restores"] if cli("db", "status").exit_code == 0 else []:
            cli("pitr", "discard", x["name"], "--yes")
        cli("db", "down", "--volumes", "--yes")
        _remove_snapshots(cli.env["MOVIE_COMPOSE_PROJECT"])


def _remove_snapshots(project: str) -> None:
    import docker

    client = docker.from_env()
    try:
        for v in client.volumes.list(filters={"name": f"{project}_pgdata-before-"}):
            v.remove(force=True)
    finally:
        client.close()


def test_readme_sequence_on_the_docker_backend(dk: Cli) -> None:
    r = dk("db", "up")
    assert r.exit_code == 0, r.output
    r = dk("pitr", "enable", "--json")  # a restart: refused without --yes, nothing changed
    assert r.exit_code == 5, r.output
    r = dk("pitr", "enable", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["restarted"] is True
    with conn(dk) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = dk("backup", "--physical", "--json")
    assert r.exit_code == 0, r.output
    base = json.loads(r.stdout)["base"]
    assert base["verified"] is True and base["server_major"] == 15
    with conn(dk) as c:
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 2000) g")
        time.sleep(1.1)
        noted = c.execute("SELECT now()").fetchone()[0].isoformat()  # type: ignore[index]
        time.sleep(1.1)
        before = facts(dk)
        c.execute("DELETE FROM t WHERE i > 500")  # the mistake, and life going on after it
        c.execute("INSERT INTO t SELECT g, 'later' FROM generate_series(5000, 5100) g")
    after = facts(dk)

    r = dk("restore", "--physical", "--to-time", noted, "--into", "before-delete", "--json")
    assert r.exit_code == 0, r.output
    restored = json.loads(r.stdout)
    assert restored["base_backup"] == base["id"] and restored["timeline"] == 2
    assert facts(restored["port"], dk) == before
    assert facts(dk) == after  # the container untouched

    r = dk("pitr", "promote", "before-delete", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["snapshot"].startswith("volume ")
    assert facts(dk) == before  # the container serves the restored rows
    with conn(dk) as c:  # and archives on, on the new timeline
        c.execute("INSERT INTO t VALUES (9999, 'after promote')")
        c.execute("SELECT pg_switch_wal()")
    assert wait_for(
        lambda: str((status(dk)["archive"] or {}).get("newest") or "").startswith("00000002"),
        60,
    )
    assert status(dk)["archiver"]["failing"] is False
    r = dk("backup", "--physical", "--json")  # the README's last step: the new timeline's
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base"]["timeline"] == 2

    # the drill (`backup verify --physical`) of that new timeline's base backup: a throwaway
    # PostgreSQL 15 cluster replays it and the archive on this host, then goes
    r = dk("backup", "verify", "--physical", "--json")
    assert r.exit_code == 0, r.output
    drill = json.loads(r.stdout)
    assert drill["ok"] is True and drill["problems"] == [], drill
    assert drill["row_counts"]["public.t"] == facts(dk)[0]
    st = status(dk)
    assert st["restores"] == []  # nothing of the drill left listed
    assert st["base_backups"][-1]["drill"]["ok"] is True  # recorded in its meta.json
    assert facts(dk)[0] == before[0] + 1  # the container untouched by it


def _before_volumes(project: str) -> list[str]:
    import docker

    client = docker.from_env()
    try:
        return [v.name for v in client.volumes.list(filters={"name": f"{project}_pgdata-before-"})]
    finally:
        client.close()


def test_kill_9_of_promote_is_finished_by_running_it_again(dk: Cli) -> None:
    """kill -9 once the snapshot volume exists (the container stopping or the copy under
    way: the helper container finishes its copy without moviectl): `db up` serves old or
    restored rows, never an empty cluster, and the promote run again swaps."""
    from tests.conftest import start_moviectl, subprocess_env

    assert dk("db", "up").exit_code == 0
    assert dk("pitr", "enable", "--yes").exit_code == 0
    with conn(dk) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    assert dk("backup", "--physical").exit_code == 0
    r = dk("restore", "--physical", "--latest", "--into", "k9", "--json")
    assert r.exit_code == 0, r.output
    want = facts(json.loads(r.stdout)["port"], dk)
    with conn(dk) as c:
        c.execute("INSERT INTO t VALUES (5000, 'after the restore')")
    old = facts(dk)
    project = dk.env["MOVIE_COMPOSE_PROJECT"]
    proc = start_moviectl(subprocess_env(**dk.env), "pitr", "promote", "k9", "--yes", cwd=None)
    try:
        assert wait_for(lambda: bool(_before_volumes(project)), 120)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    time.sleep(5)  # a helper container still copying finishes (it is not moviectl's child)
    r = dk("db", "up", "--timeout", "90")
    assert r.exit_code == 0, r.output
    assert facts(dk) in (old, want)  # never an empty cluster
    r = dk("pitr", "promote", "k9", "--yes")
    assert r.exit_code == 0, r.output
    assert facts(dk) == want
    assert len(_before_volumes(project)) == 2  # both snapshots kept
