"""A ``promoting.json`` moviectl did not write, seen by the commands that read it on the
embedded backend: `pitr discard` (with and without ``--json``), `db up` (the server
stopped: it never initdb-s nor starts over it) and `pitr promote` (the journal's paths are
the ones it would rename: a path outside the data directory is never moved). One line
naming the file, exit 5, no traceback, nothing deleted or moved, the file left as it is.
The Docker cases: tests/core/servers/test_pitr_docker_promote_attack.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli
from tests.core.pitr_support import conn, facts, started

pytestmark = pytest.mark.timeout(600)

_BASE = {"name": "first", "pid": 1, "timeline": 2, "wal_moved": 0, "aside": None}


def _doc(**over: Any) -> str:
    return json.dumps({**_BASE, **over})


@pytest.fixture
def pitr(tmp_path: Path) -> Iterator[Cli]:
    """An embedded server archiving, a base backup of table ``t`` and its restore
    ``first``; everything discarded and stopped after."""
    run = started(tmp_path / "pitr")
    cli = next(run)
    with conn(cli) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g")
    r = cli("backup", "--physical")
    assert r.exit_code == 0, r.output
    r = cli("restore", "--physical", "--latest", "--into", "first", "--json")
    assert r.exit_code == 0, r.output
    try:
        yield cli
    finally:
        _journal(cli).unlink(missing_ok=True)
        run.close()


def _journal(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_DATA_DIR"]) / "promoting.json"


def _victim(root: Path) -> Path:
    """A directory outside the data directory that a hostile journal names."""
    victim = root / "victim" / "pgdata"
    victim.mkdir(parents=True, exist_ok=True)
    (victim / "keep").write_text("mine")
    return victim


def _outside_restored(data: Path, root: Path) -> str:
    """`restored` outside, `aside` in the data directory: a swap would set the real
    pgdata aside and rename the victim in its place."""
    return _doc(restored=str(_victim(root)), aside=str(data / "pgdata.before-20260101T000000Z"))


def _dotdot_restored(data: Path, root: Path) -> str:
    _victim(root)
    up = os.path.relpath(root / "victim" / "pgdata", data / "restores" / "first")
    return _doc(restored=str(data / "restores" / "first" / up))


def _outside_aside(data: Path, root: Path) -> str:
    return _doc(
        restored=str(data.resolve() / "restores" / "first" / "pgdata"),
        aside=str(root / "victim" / "pgdata.before-20260101T000000Z"),
    )


def _symlink(data: Path, root: Path) -> None:
    """A symlink to a journal that reads as moviectl's own (never followed)."""
    real = root / "elsewhere.json"
    real.write_text(_doc(restored=str(data.resolve() / "restores" / "first" / "pgdata")))
    (data / "promoting.json").symlink_to(real)


def _fifo(data: Path, root: Path) -> None:
    os.mkfifo(data / "promoting.json")  # a plain open would block forever


_Case = Callable[[Path, Path], "str | bytes | None"]
_CASES: dict[str, _Case] = {
    "garbage": lambda d, r: "not json {",
    "binary": lambda d, r: b"\xff\xfe\x00garbage",
    "huge": lambda d, r: " " * (1 << 20) + _doc(),
    "wrong types": lambda d, r: _doc(pid="x", timeline="two"),
    "restored outside": _outside_restored,
    "restored via ..": _dotdot_restored,
    "aside outside": _outside_aside,
    "docker volume a path": lambda d, r: _doc(volume="/etc", aside="../../x"),
    "symlink": _symlink,
    "fifo": _fifo,
}


def _snapshot(data: Path, root: Path) -> dict[str, Any]:
    """What must not change: the journal entry, the restore, the real pgdata, the victim."""
    j = data / "promoting.json"
    victim = root / "victim" / "pgdata"
    return {
        "journal": os.readlink(j) if j.is_symlink() else (j.read_bytes() if j.is_file() else "x"),
        "restore": sorted(p.name for p in (data / "restores" / "first").iterdir()),
        "pgdata": (data / "pgdata" / "PG_VERSION").read_text(),
        "aside": sorted(p.name for p in data.glob("pgdata.before-*")),
        "victim": sorted(p.name for p in victim.iterdir()) if victim.exists() else None,
    }


def _refused(r: Any, args: tuple[str, ...]) -> None:
    assert r.exit_code == 5, (args, r.output)
    assert "Traceback" not in r.output, r.output
    assert "promoting.json" in r.output, (args, r.output)
    if "--json" in args:
        said = [line for line in r.output.splitlines() if line.strip()]
        assert any("promoting.json" in line for line in said), r.output


@pytest.mark.parametrize("case", list(_CASES))
def test_a_hostile_journal_refuses_discard_db_up_and_promote(
    pitr: Cli, tmp_path: Path, case: str
) -> None:
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    want = facts(pitr)
    made = _CASES[case](data, tmp_path)
    if made is not None:
        j = _journal(pitr)
        j.write_bytes(made.encode() if isinstance(made, str) else made)
    before = _snapshot(data, tmp_path)
    for args in (
        ("pitr", "promote", "first", "--yes"),
        ("--json", "pitr", "promote", "first", "--yes"),
        ("pitr", "discard", "first", "--yes"),
        ("--json", "pitr", "discard", "first", "--yes"),
    ):
        _refused(pitr(*args), args)
        assert _snapshot(data, tmp_path) == before, args
    assert facts(pitr) == want  # the server never stopped for a swap
    assert pitr("db", "down").exit_code == 0
    for args in (("db", "up", "--timeout", "30"), ("--json", "db", "up", "--timeout", "30")):
        _refused(pitr(*args), args)
        assert _snapshot(data, tmp_path) == before, args
    assert pitr("db", "status").exit_code != 0  # no server started over it
    _journal(pitr).unlink()  # the way out: moved away once no promote is unfinished
    assert pitr("db", "up", "--timeout", "60").exit_code == 0
    assert facts(pitr) == want


def test_a_docker_journal_is_refused_by_the_embedded_promote(pitr: Cli, tmp_path: Path) -> None:
    """A journal the Docker promote wrote (no `restored`: the backend switched since):
    the embedded promote refuses in one line naming the file (exit 5), nothing moved,
    never a traceback."""
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    want = facts(pitr)
    _journal(pitr).write_text(_doc(volume="proj_pgdata", aside="proj_pgdata-before-x"))
    before = _snapshot(data, tmp_path)
    for args in (
        ("pitr", "promote", "first", "--yes"),
        ("--json", "pitr", "promote", "first", "--yes"),
    ):
        _refused(pitr(*args), args)
        assert _snapshot(data, tmp_path) == before, args
    assert facts(pitr) == want
