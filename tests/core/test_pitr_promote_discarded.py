"""`pitr promote` (embedded, a local archive) killed before its swap and then given up
(`pitr discard`): no later `restore --latest` follows the timeline that was never swapped in
(it would hold the discarded restore's rows, not the live server's), and the same restore
again is promoted past the leftovers. The s3 version: test_pitr_s3_promote_attack.py."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env
from tests.core.pitr_support import KILL_AT, conn, facts, started

pytestmark = pytest.mark.timeout(900)

_MORE = "INSERT INTO t SELECT m + g, %s FROM (SELECT max(i) m FROM t) x, generate_series(1, 100) g"


@pytest.fixture
def pitr(tmp_path: Path) -> Iterator[Cli]:
    run = started(tmp_path / "pitr")
    cli = next(run)  # held: closing it discards the restores and stops the server
    with conn(cli) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = cli("backup", "--physical")
    assert r.exit_code == 0, r.output
    try:
        yield cli
    finally:
        run.close()


def _restore(pitr: Cli, name: str, *target: str) -> tuple[int, int]:
    r = pitr("restore", "--physical", *target, "--into", name, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    return int(doc["port"]), int(doc["timeline"])


@pytest.mark.parametrize("phase", ["history", "journal"])
def test_a_promote_killed_before_its_swap_and_discarded_misleads_no_latest_restore(
    pitr: Cli, phase: str
) -> None:
    """kill -9 the moment the history file is in the archive, or once every file is and
    nothing is journaled yet. Either the kill left the promote journaled (discard refused,
    exit 5: re-running it finishes the swap) or, discarded, the archive has no history
    file of timeline 2 and a `--latest` restore holds the live server's rows, never the
    discarded restore's; then the same restore again takes timeline 3, is promoted
    (a comments-only tombstone 00000002.history filling the gap) and a `--latest`
    restore follows timeline 3."""
    wal = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"
    with conn(pitr) as c:
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        time.sleep(1.1)
        c.execute(_MORE, ("live",))
    noted = row[0].isoformat()
    port, tli = _restore(pitr, "first", "--to-time", noted)
    assert tli == 2
    with conn(pitr, port) as c:  # rows only the restore that will be given up holds
        c.execute(_MORE, ("discarded",))
    discarded = facts(port, pitr)
    env = subprocess_env(**pitr.env, KILL_AT=phase)
    proc = start_moviectl(env, "pitr", "promote", "first", "--yes", python=KILL_AT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err

    r = pitr("pitr", "discard", "first", "--yes")
    if r.exit_code == 5:  # journaled: it may not be given up, only finished
        assert "pitr promote first" in r.output, r.output
        assert (wal / "00000002.history").exists()
        r = pitr("pitr", "promote", "first", "--yes", "--json")
        assert r.exit_code == 0, r.output
        assert facts(pitr) == discarded
        return
    assert r.exit_code == 0, r.output  # the user gave up on it: the server never left 1
    with conn(pitr) as c:
        c.execute(_MORE, ("later",))
    live = facts(pitr)
    port, tli = _restore(pitr, "follow", "--latest")
    got = facts(port, pitr)
    assert got != discarded, "a --latest restore followed the discarded timeline"
    assert got == live and tli == 3, tli
    assert not (wal / "00000002.history").exists()
    assert pitr("pitr", "discard", "follow", "--yes").exit_code == 0

    left = {p.name: p.read_bytes() for p in wal.glob("00000002*")}
    assert left, "the killed promote copied none of timeline 2's WAL"
    port, tli = _restore(pitr, "second", "--to-time", noted)
    assert tli == 3  # past the leftovers of 2
    want = facts(port, pitr)
    r = pitr("pitr", "promote", "second", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert {n: (wal / n).read_bytes() for n in left} == left  # the leftovers, as they were
    tomb = (wal / "00000002.history").read_text()
    assert all(x.startswith("#") for x in tomb.splitlines()), tomb  # never followed
    assert "\n1\t" in "\n" + (wal / "00000003.history").read_text()  # forked from 1
    with conn(pitr) as c:
        c.execute(_MORE, ("on 3",))
    after = facts(pitr)
    port, tli = _restore(pitr, "latest", "--latest")
    assert tli == 4  # through 2's tombstone to 3
    assert facts(port, pitr) == after
