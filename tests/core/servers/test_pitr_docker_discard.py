"""`pitr promote` on the Docker backend cut short before its swap, then given up (`pitr
discard`): no later `restore --latest` follows the timeline that was never swapped in (it
would hold the discarded restore's rows, not the live container's). The embedded version:
tests/core/test_pitr_promote_discarded.py (the same invariant, the same timelines.py)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env
from tests.core.pitr_support import KILL_AT, conn, facts
from tests.core.servers.test_pitr_docker import dk, image  # noqa: F401  (fixtures)
from tests.core.test_pitr_promote_discarded import _MORE

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]


def _wal(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"


def _restore(cli: Cli, name: str, *target: str) -> tuple[int, int]:
    r = cli("restore", "--physical", *target, "--into", name, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    return int(doc["port"]), int(doc["timeline"])


def _first(cli: Cli) -> tuple[str, tuple[int, str]]:
    """The container archiving, a base backup, a noted moment, rows after it; restored to
    that moment as `first` (timeline 2) with rows only it holds. (noted, its facts)"""
    assert cli("db", "up").exit_code == 0
    r = cli("pitr", "enable", "--yes")
    assert r.exit_code == 0, r.output
    with conn(cli) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = cli("backup", "--physical")
    assert r.exit_code == 0, r.output
    with conn(cli) as c:
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        time.sleep(1.1)
        c.execute(_MORE, ("live",))
    noted = row[0].isoformat()
    port, tli = _restore(cli, "first", "--to-time", noted)
    assert tli == 2
    with conn(cli, port) as c:  # rows only the restore that will be given up holds
        c.execute(_MORE, ("discarded",))
    return noted, facts(port, cli)


def _given_up(cli: Cli, discarded: tuple[int, str], noted: str) -> None:
    """`first` discarded: a `--latest` restore holds the live container's rows (timeline 3,
    past the leftovers of 2 if the promote merged any, else 2); the same restore again
    takes that number, is promoted (past leftovers: with a comments-only tombstone
    00000002.history), and a `--latest` restore follows it."""
    wal = _wal(cli)
    left = {p.name: p.read_bytes() for p in wal.glob("00000002*")}
    ours = 3 if left else 2
    with conn(cli) as c:
        c.execute(_MORE, ("later",))
        c.execute("SELECT pg_switch_wal()")
    live = facts(cli)
    port, tli = _restore(cli, "follow", "--latest")
    got = facts(port, cli)
    assert got != discarded, "a --latest restore followed the discarded timeline"
    assert got == live and tli == ours, tli
    assert not (wal / "00000002.history").exists()
    assert cli("pitr", "discard", "follow", "--yes").exit_code == 0

    port, tli = _restore(cli, "second", "--to-time", noted)
    assert tli == ours  # past the leftovers of 2
    want = facts(port, cli)
    r = cli("pitr", "promote", "second", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(cli) == want
    assert {n: (wal / n).read_bytes() for n in left} == left  # the leftovers, as they were
    if left:
        tomb = (wal / "00000002.history").read_text()
        assert all(x.startswith("#") for x in tomb.splitlines()), tomb  # never followed
    assert "\n1\t" in "\n" + (wal / f"0000000{ours}.history").read_text()  # forked from 1
    with conn(cli) as c:
        c.execute(_MORE, ("on 3",))
        c.execute("SELECT pg_switch_wal()")
    after = facts(cli)
    port, tli = _restore(cli, "latest", "--latest")
    assert tli == ours + 1  # (through 2's tombstone) to ours
    assert facts(port, cli) == after


@pytest.mark.parametrize("phase", ["journal", "history", "swap"])
def test_a_docker_promote_killed_before_its_swap_and_discarded_misleads_no_latest_restore(
    dk: Cli,  # noqa: F811
    phase: str,
) -> None:
    """kill -9 once the segments are merged (nothing journaled), the moment the history
    file is in the archive, or as the volume copy is about to start. Either the kill left
    the promote journaled (discard refused, exit 5; `pitr status` says so: re-running it
    finishes the swap, the container holds the restored rows) or, discarded, no
    `--latest` restore follows timeline 2 (`_given_up`)."""
    noted, discarded = _first(dk)
    env = subprocess_env(**dk.env, KILL_AT=phase)
    proc = start_moviectl(env, "pitr", "promote", "first", "--yes", python=KILL_AT, cwd=None)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    r = dk("db", "up", "--timeout", "90")  # the container as the kill left it, running
    assert r.exit_code == 0, r.output

    r = dk("pitr", "discard", "first", "--yes")
    assert (r.exit_code == 5) == (phase != "journal"), r.output  # journaled before the copy
    if r.exit_code == 5:  # journaled: it may not be given up, only finished
        assert "pitr promote first" in r.output, r.output
        r = dk("--json", "pitr", "status")
        said = " ".join(json.loads(r.stdout).get("warnings") or [])
        assert "`pitr discard` refuses" in said and "`db up` refuses" not in said, said
        r = dk("db", "upgrade", "--to", "17", "--yes")  # a re-run would copy 15 over it
        assert r.exit_code == 5 and "pitr promote first" in r.output, r.output
        r = dk("pitr", "promote", "first", "--yes", "--json")
        assert r.exit_code == 0, r.output
        assert facts(dk) == discarded
        assert (_wal(dk) / "00000002.history").exists()
        return
    assert r.exit_code == 0, r.output  # the user gave up on it: the container never left 1
    _given_up(dk, discarded, noted)


def test_a_docker_promote_whose_copy_cannot_start_misleads_no_latest_restore(
    dk: Cli,  # noqa: F811
) -> None:
    """The volume copy's helper container cannot start (its image is missing): the promote
    fails, the container still serves its own rows, and once the restore is given up no
    `--latest` restore follows timeline 2 (`_given_up`)."""
    noted, discarded = _first(dk)
    before = facts(dk)
    r = dk("pitr", "promote", "first", "--yes", MOVIE_DB_IMAGE="localhost/moviectl-missing:none")
    assert r.exit_code != 0, r.output
    assert "moviectl-missing" in r.output, r.output
    assert dk("db", "up", "--timeout", "90").exit_code == 0
    assert facts(dk) == before
    r = dk("pitr", "discard", "first", "--yes")
    assert r.exit_code == 0, r.output
    _given_up(dk, discarded, noted)
