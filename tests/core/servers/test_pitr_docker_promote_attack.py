"""Attacks on the journaled Docker `pitr promote` (``promote_docker.py``): a re-run from
each phase finishes and never copies the restored cluster over writes made to the container
after the copy; the restore directory deleted by hand while the journal waits; SIGTERM mid
copy; a hostile ``promoting.json`` (one line, exit 5, no traceback)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env, wait_for
from tests.core.pitr_support import KILL_AT, conn, facts, status
from tests.core.servers.test_pitr_docker import dk, image  # noqa: F401  (fixtures)
from tests.core.servers.test_pitr_docker_discard import _first
from tests.core.test_pitr_promote_discarded import _MORE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


@pytest.fixture
def pd(dk: Cli) -> Iterator[Cli]:  # noqa: F811
    """``dk``, and a helper container a failed test left removed first (it holds the
    snapshot volume ``dk`` removes)."""
    try:
        yield dk
    finally:
        import docker

        client = docker.from_env()
        try:
            for name in _helpers(dk):
                client.containers.get(name).remove(force=True)
        finally:
            client.close()


def _journal(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_DATA_DIR"]) / "promoting.json"


def _restores(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_DATA_DIR"]) / "restores"


def _wal(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"


def _killed_at(cli: Cli, phase: str) -> None:
    env = subprocess_env(**cli.env, KILL_AT=phase)
    proc = start_moviectl(env, "pitr", "promote", "first", "--yes", python=KILL_AT, cwd=None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    assert _journal(cli).exists()
    r = cli("db", "up", "--timeout", "90")
    assert r.exit_code == 0, r.output


def _helpers(cli: Cli) -> list[str]:
    import docker

    client = docker.from_env()
    try:
        project = cli.env["MOVIE_COMPOSE_PROJECT"]
        return [
            c.name
            for c in client.containers.list(ignore_removed=True, all=True)
            if c.name.startswith(project) and c.name.endswith("-promote-copy")
        ]
    finally:
        client.close()


def _copying(cli: Cli) -> bool:
    """A helper container still running (its copy not finished)."""
    import docker

    client = docker.from_env()
    try:
        names = set(_helpers(cli))
        # Listed, not fetched by name: the helper removes itself when its copy ends.
        running = client.containers.list(ignore_removed=True, filters={"status": "running"})
        return any(c.name in names for c in running)
    finally:
        client.close()


def test_db_up_refuses_while_a_copy_still_runs(pd: Cli) -> None:
    """A cut-short promote's helper still copying into the volume (a stand-in: a running
    container of the helper's name): `db up` refuses (exit 7), naming it, and starts no
    server on a volume being written; once it is gone, `db up` starts."""
    import docker

    assert pd("db", "up").exit_code == 0
    assert pd("db", "down").exit_code == 0
    db = f"{pd.env['MOVIE_COMPOSE_PROJECT']}-db-1"
    client = docker.from_env()
    helper = client.containers.run(
        pd.env["MOVIE_DB_IMAGE"], ["sleep", "300"], name=f"{db}-promote-copy", detach=True
    )
    try:
        r = pd("db", "up", "--timeout", "30")
        assert r.exit_code == 7 and f"{db}-promote-copy" in r.output, r.output
        _one_line(r)
        assert not [
            c
            for c in client.containers.list(ignore_removed=True, filters={"name": db})
            if c.name == db
        ]
    finally:
        helper.remove(force=True)
        client.close()
    assert pd("db", "up", "--timeout", "90").exit_code == 0


def _one_line(r: object) -> None:
    out = getattr(r, "output", "")
    assert "Traceback" not in out, out


def _state(cli: Cli) -> dict[str, object]:
    """What a refused re-run must leave as it was: the journal, the volumes, the db and
    helper containers, the restore, the archive."""
    import docker

    project = cli.env["MOVIE_COMPOSE_PROJECT"]
    client = docker.from_env()
    try:
        return {
            "journal": _journal(cli).read_bytes(),
            "volumes": sorted(v.name for v in client.volumes.list(filters={"name": project})),
            "containers": sorted(
                (c.name, c.id, c.status)
                for c in client.containers.list(ignore_removed=True, all=True)
                if c.name.startswith(project)
            ),
            "restore": sorted(p.name for p in (_restores(cli) / "first").iterdir()),
            "archive": sorted(p.name for p in _wal(cli).iterdir()),
        }
    finally:
        client.close()


def test_a_rerun_while_the_copy_still_runs_is_refused_and_changes_nothing(
    pd: Cli, tmp_path: Path
) -> None:
    """kill -9 while the helper container copies, re-run at once while it still runs (its
    copy held on a gate file the test opens): `pitr promote` (with and without --json) and
    `db up` refuse, exit 7, one line naming the helper container; nothing changed (the
    journal, the volumes, the containers, the restore, the archive). Once the helper has
    exited, the re-run finishes: the container serves the restored rows."""
    _, restored = _first(pd)
    gate = tmp_path / "gate"
    gate.mkdir()
    env = subprocess_env(**pd.env, KILL_AT="gated", KILL_GATE=str(gate))
    proc = start_moviectl(env, "pitr", "promote", "first", "--yes", python=KILL_AT, cwd=None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    helper = f"{pd.env['MOVIE_COMPOSE_PROJECT']}-db-1-promote-copy"
    assert _helpers(pd) == [helper] and _copying(pd)
    before = _state(pd)
    for args in (
        ("pitr", "promote", "first", "--yes"),
        ("--json", "pitr", "promote", "first", "--yes"),
        ("db", "up", "--timeout", "30"),
    ):
        r = pd(*args)
        _one_line(r)
        assert r.exit_code == 7, (args, r.output)
        assert any(helper in line for line in r.output.splitlines()), r.output
        assert _state(pd) == before, args
    assert _copying(pd), "the helper container was stopped"
    (gate / "go").touch()
    assert wait_for(lambda: not _copying(pd), 120)
    r = pd("pitr", "promote", "first", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pd) == restored
    assert not _journal(pd).exists()
    assert _helpers(pd) == []


@pytest.mark.parametrize("phase", ["midcopy", "copied", "history", "renamed"])
def test_a_rerun_from_each_phase_after_the_copy_keeps_later_writes(
    pd: Cli,
    phase: str,
) -> None:
    """kill -9 while the helper container copies (it finishes on its own), once the copy is
    recorded, once the history file is in, or once the restore directory went aside: rows
    written to the container since survive the re-run (nothing copied again), which
    finishes: no journal, the history file in, no `.promoted-*` left, no helper container."""
    _first(pd)
    _killed_at(pd, phase)
    with conn(pd) as c:
        c.execute(_MORE, ("after the copy",))
    want = facts(pd)
    r = pd("pitr", "promote", "first", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pd) == want, "the re-run copied the restored cluster over later writes"
    assert not _journal(pd).exists()
    assert (_wal(pd) / "00000002.history").exists()
    assert [p.name for p in _restores(pd).iterdir()] == [], "a restore directory was left"
    assert _helpers(pd) == []


@pytest.mark.parametrize("phase", ["swap", "midcopy", "copied"])
def test_the_restore_directory_deleted_while_the_journal_waits(
    pd: Cli,
    phase: str,
) -> None:
    """Before the copy: the re-run says, in one line (exit 5), that nothing was swapped and
    drops the journal (the container keeps its rows; `pitr status` is clean). After the
    copy (recorded, or its helper container exited 0): the re-run finishes from the
    journal, the history file put in from it."""
    _first(pd)
    before = facts(pd)
    _killed_at(pd, phase)
    import shutil

    shutil.rmtree(_restores(pd) / "first")
    r = pd("pitr", "promote", "first", "--yes")
    _one_line(r)
    if phase == "swap":
        assert r.exit_code == 5, r.output
        assert "nothing was swapped" in r.output, r.output
        assert not _journal(pd).exists()
        assert facts(pd) == before
        assert not (_wal(pd) / "00000002.history").exists()
        assert not any("pitr promote" in w for w in status(pd)["warnings"])
        return
    assert r.exit_code == 0, r.output
    assert not _journal(pd).exists()
    assert (_wal(pd) / "00000002.history").exists()


def test_sigterm_mid_copy_and_what_refuses_while_the_journal_waits(
    pd: Cli,
) -> None:
    """SIGTERM once the db container stopped for the copy: exit 143, the journal left, the
    next step printed. Meanwhile a promote of another restore and `pitr discard` refuse
    (exit 5); `db down` then `db up` are allowed; the re-run finishes."""
    _, discarded = _first(pd)
    r = pd("restore", "--physical", "--latest", "--into", "other", "--json")
    assert r.exit_code == 0, r.output
    proc = start_moviectl(subprocess_env(**pd.env), "pitr", "promote", "first", "--yes")
    import docker

    client = docker.from_env()
    name = f"{pd.env['MOVIE_COMPOSE_PROJECT']}-db-1"
    deadline = time.monotonic() + 240
    while client.containers.get(name).status == "running" and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    client.close()
    assert proc.returncode == 143, err
    assert "Traceback" not in err, err
    assert "moviectl pitr promote first --yes" in err, err
    assert _journal(pd).exists()
    assert wait_for(lambda: not _copying(pd), 120)  # the helper container finishes its copy
    r = pd("pitr", "promote", "other", "--yes")
    assert r.exit_code == 5 and "pitr promote first" in r.output, r.output
    r = pd("pitr", "discard", "first", "--yes")
    assert r.exit_code == 5, r.output
    assert pd("db", "down").exit_code == 0
    assert pd("db", "up", "--timeout", "90").exit_code == 0
    r = pd("pitr", "promote", "first", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pd) == discarded
    assert not _journal(pd).exists()


_HOSTILE = [
    "not json",
    "[]",
    '"first"',
    '{"name": 5}',
    '{"name": "first", "pid": "x", "timeline": "two", "wal_moved": 0, "aside": null}',
    '{"name": "first", "pid": 1, "timeline": 2, "wal_moved": 0, "aside": null, "volume": 7}',
    '{"name": "../x", "pid": 1, "timeline": 2, "wal_moved": 0, "aside": null}',
    '{"name": "first", "pid": 1, "timeline": 2, "wal_moved": 0, "aside": "/x", "volume": "v"}',
    '{"name": "first", "pid": 1, "timeline": 2, "wal_moved": 0, "aside": null, "copying": "../v"}',
]


@pytest.mark.parametrize("text", _HOSTILE)
def test_a_hostile_journal_is_one_line_and_refuses(
    pd: Cli,
    text: str,
) -> None:
    """A ``promoting.json`` moviectl did not write (not JSON, not an object, wrong types):
    `pitr promote` and `db upgrade` refuse in one line (exit 5) naming the file, and
    `pitr status` warns about it; nothing is swapped, no traceback."""
    j = _journal(pd)
    j.parent.mkdir(parents=True, exist_ok=True)
    j.write_text(text)
    for args in (("pitr", "promote", "first", "--yes"), ("db", "upgrade", "--to", "17", "--yes")):
        r = pd(*args)
        _one_line(r)
        assert r.exit_code == 5, (args, r.output)
        assert "promoting.json" in r.output, r.output
    r = pd("pitr", "status", "--json")
    _one_line(r)
    said = " ".join(json.loads(r.stdout).get("warnings") or [])
    assert "promoting.json" in said, r.output
    assert j.read_text() == text


def test_a_helper_created_but_never_started_is_not_taken_for_a_copy(pd: Cli) -> None:
    """kill -9 between the helper container's create and start (a created container reads
    exit code 0): the re-run neither waits for it forever nor records a copy that never
    ran; it copies, and the container serves the restored rows."""
    _, restored = _first(pd)
    _killed_at(pd, "created")
    r = pd("pitr", "promote", "first", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pd) == restored
    assert not _journal(pd).exists()
    assert _helpers(pd) == []
