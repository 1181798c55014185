"""`health`'s archiving check (pg_stat_archiver) on a real embedded PostgreSQL 18: off
passes, archiving passes, a repository gone turns it into a warning (exit 1, "degraded")
and back once the archiver catches up; the lag arithmetic across a log boundary."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moviectl.core.health.archiving import waiting
from tests.conftest import Cli, wait_for
from tests.core.pitr_support import conn, started

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    yield from started(tmp_path_factory.mktemp("health-archiving"))


def _archiving(cli: Cli) -> tuple[int, dict[str, Any], str]:
    r = cli("health", "--check", "archiving", "--json")
    doc = json.loads(r.stdout)
    return r.exit_code, {c["name"]: c for c in doc["checks"]}["archiving"], doc["status"]


def test_archiving_off_passes(cli: Cli) -> None:
    code, check, _ = _archiving(cli)
    assert code == 0 and check["status"] == "pass", check
    assert "archiving off" in check["detail"]


def test_failing_archiving_warns_and_recovers(pitr: Cli) -> None:
    code, check, status = _archiving(pitr)
    assert (code, check["status"], status) == (0, "pass", "ok"), check
    wal = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"
    aside = wal.with_name("wal-unmounted")
    os.rename(wal, aside)
    try:
        with conn(pitr) as c:
            c.execute("CREATE TABLE IF NOT EXISTS u (i int)")
            c.execute("INSERT INTO u SELECT generate_series(1, 1000)")
            c.execute("SELECT pg_switch_wal()")
        assert wait_for(lambda: _archiving(pitr)[1]["data"]["failing"], 60)
        code, check, status = _archiving(pitr)
        assert (code, check["status"], status) == (1, "warn", "degraded"), check
        assert "archiving is failing" in check["detail"] and "\n" not in check["detail"]
        r = pitr("health", "--check", "archiving")  # the text form names it too
        assert "archiving" in r.stdout and "failing" in r.stdout, r.output
    finally:
        os.rename(aside, wal)
    with conn(pitr) as c:
        c.execute("SELECT pg_switch_wal()")
    assert wait_for(lambda: _archiving(pitr)[1]["status"] == "pass", 120)


def test_waiting_segments_across_a_log_boundary() -> None:
    assert waiting("0000000100000001000000FF", "0000000100000001000000FE") == 0
    assert waiting("000000010000000200000001", "0000000100000001000000FE") == 2
    assert waiting("000000010000000200000001", "00000001.history") is None
    assert waiting(None, "0000000100000001000000FE") is None
    # 1 GiB segments: 4 per log
    assert waiting("000000010000000200000000", "000000010000000100000001", 1 << 30) == 2
