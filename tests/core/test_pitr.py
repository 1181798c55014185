"""PITR end to end on a real embedded PostgreSQL 18: enable, base backup, a mistaken
delete, restore to the moment before it, promote; marks, drills, retention, range errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.core.pitr_support import conn, facts, started, status

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    yield from started(tmp_path_factory.mktemp("pitr"))


def test_enable_needs_confirmation_to_restart(tmp_path: Path) -> None:
    from tests.core.pitr_support import pitr_env

    cli = Cli(pitr_env(tmp_path))
    assert cli("db", "up").exit_code == 0
    try:
        r = cli("pitr", "enable", "--json")
        assert r.exit_code == 5, r.output
        assert (
            "archive_mode"
            not in (tmp_path / "data" / "pgdata" / "postgresql.auto.conf").read_text()
        )
        assert not (tmp_path / "data" / "pgdata" / "moviectl-pitr.conf").exists()
    finally:
        cli("db", "down")


def test_restore_to_the_moment_before_a_mistaken_delete(pitr: Cli) -> None:
    with conn(pitr) as c:
        c.execute("DROP TABLE IF EXISTS t")
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = pitr("backup", "--physical", "--json")
    assert r.exit_code == 0, r.output
    base = json.loads(r.stdout)["base"]
    assert base["verified"] is True and base["end_lsn"]
    with conn(pitr) as c:
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1001, 2000) g")
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        noted = row[0].isoformat()
        time.sleep(1.1)
    before = facts(pitr)
    with conn(pitr) as c:  # the mistake, and life going on after it
        c.execute("DELETE FROM t WHERE i > 500")
        c.execute("INSERT INTO t SELECT g, 'later' FROM generate_series(5000, 5100) g")
    after = facts(pitr)
    assert after[0] == 601

    r = pitr("restore", "--physical", "--to-time", noted, "--into", "before-delete", "--json")
    assert r.exit_code == 0, r.output
    restored = json.loads(r.stdout)
    assert restored["base_backup"] == base["id"] and restored["timeline"] == 2
    assert facts(restored["port"], pitr) == before  # same rows, same bytes
    assert facts(pitr) == after  # the running server untouched
    assert "movie:***@" in restored["url"]
    listed = status(pitr)
    assert [x["name"] for x in listed["restores"]] == ["before-delete"]
    assert listed["archiver"]["failed_count"] == 0 and listed["archive"]["gaps"] == []

    # a named restore point, later deletes, then back to the name
    r = pitr("pitr", "mark", "before-truncate", "--json")
    assert r.exit_code == 0, r.output
    marked = facts(pitr)
    with conn(pitr) as c:
        c.execute("TRUNCATE t")
    r = pitr("restore", "--physical", "--to-name", "before-truncate", "--into", "named", "--json")
    assert r.exit_code == 0, r.output
    assert facts(json.loads(r.stdout)["port"], pitr) == marked
    assert pitr("pitr", "discard", "named", "--yes").exit_code == 0

    # swap the restored cluster in: the deleted rows are back, the old cluster kept aside
    r = pitr("pitr", "promote", "before-delete", "--yes", "--json")
    assert r.exit_code == 0, r.output
    promoted = json.loads(r.stdout)
    assert Path(promoted["snapshot"]).is_dir()
    assert facts(pitr) == before
    with conn(pitr) as c:  # archiving goes on, on the new timeline
        c.execute("INSERT INTO t VALUES (9999, 'after promote')")
        row = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        c.execute("SELECT pg_switch_wal()")
    from tests.conftest import wait_for

    # wait for that very segment: archived_count can be > 0 before the promoted server
    # archived anything (the restored cluster's own statistics, kept by its clean stop),
    # and the segment's copy is fsynced, slow on a loaded machine
    assert row is not None
    wal = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"
    assert wait_for(lambda: (wal / row[0]).exists(), 60), row[0]
    st = status(pitr)
    assert st["archiver"]["archived_count"] > 0
    assert st["archiver"]["failing"] is False
    assert any(n.startswith("00000002") for n in [st["archive"]["newest"]])
    r = pitr("backup", "--physical", "--json")  # the README's last step: the new timeline's
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base"]["timeline"] == 2


def test_out_of_range_targets_are_one_line_exit_2(pitr: Cli) -> None:
    if not status(pitr)["base_backups"]:
        assert pitr("backup", "--physical").exit_code == 0
    for when in ("2000-01-01 00:00:00+00", "2999-01-01 00:00:00+00"):
        r = pitr("restore", "--physical", "--to-time", when, "--json")
        assert r.exit_code == 2, r.output
        doc = json.loads(r.stdout)
        assert "recoverable range" in doc["message"] and "\n" not in doc["message"]
    r = pitr("restore", "--physical", "--to-lsn", "0/1", "--json")
    assert r.exit_code == 2 and "before the oldest base backup" in r.stdout
    r = pitr("restore", "--physical", "--to-name", "never-made", "--json")
    assert r.exit_code == 2, r.output
    r = pitr("restore", "--physical", "--json")  # no target at all
    assert r.exit_code == 2, r.output
    assert not status(pitr)["restores"] or all(
        x["name"] != "restore" for x in status(pitr)["restores"]
    )


def test_drill_records_its_result_and_prune_keeps_needed_wal(pitr: Cli) -> None:
    assert pitr("backup", "--physical").exit_code == 0
    with conn(pitr) as c:
        c.execute("CREATE TABLE IF NOT EXISTS t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t VALUES (424242, 'drill') ON CONFLICT DO NOTHING")
    r = pitr("backup", "verify", "--physical", "--json")
    assert r.exit_code == 0, r.output
    drill = json.loads(r.stdout)
    assert drill["ok"] is True and drill["row_counts"]["public.t"] >= 1
    st = status(pitr)
    assert st["base_backups"][-1]["drill"]["ok"] is True
    from moviectl.core.health.metrics import pitr_facts
    from moviectl.infra.settings import load_settings

    facts_now = pitr_facts(
        load_settings(use_dotenv=False, backup_dir=pitr.env["MOVIE_BACKUP_DIR"])
    )  # /metrics: the newest base backup, verified recovery point and archived WAL
    assert facts_now is not None and time.time() - facts_now.last_archived < 600
    assert facts_now.last_base > 0 and facts_now.last_verified_point >= facts_now.last_base
    assert not st["restores"]  # the throwaway cluster is gone
    before = len(st["base_backups"])
    r = pitr("pitr", "prune", "--keep", "1", "--yes", "--json")
    assert r.exit_code == 0, r.output
    pruned = json.loads(r.stdout)
    assert len(pruned["deleted_base_backups"]) == before - 1
    st = status(pitr)
    assert len(st["base_backups"]) == 1 and st["archive"]["gaps"] == []
    r = pitr("restore", "--physical", "--latest", "--into", "after-prune", "--json")
    assert r.exit_code == 0, r.output
    assert facts(json.loads(r.stdout)["port"], pitr)[0] == facts(pitr)[0]
