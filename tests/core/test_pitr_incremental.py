"""Incremental base backups on a real embedded PostgreSQL 18: rows, a full backup, rows,
an incremental one, a mistaken delete, a restore to the moment before it through
pg_combinebackup; the chain in `pitr status`, retention keeping it, the drill; and a
missing, tampered or killed chain refused or cleared with nothing listed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env, wait_for
from tests.core.pitr_support import conn, facts, started, status

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    yield from started(tmp_path_factory.mktemp("pitr-incr"))


@pytest.fixture(scope="module")
def chain(pitr: Cli) -> dict[str, Any]:
    """rows → full → rows → incremental → rows, the time noted → a mistaken delete."""
    with conn(pitr) as c:
        assert c.execute("SHOW summarize_wal").fetchone() == ("on",)  # `pitr enable` set it
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
    r = pitr("backup", "--physical", "--incremental", "--json")  # none yet: a full one
    assert r.exit_code == 0, r.output
    full = json.loads(r.stdout)
    assert full["base"]["parent"] is None and "this one is full" in full["notes"][0]
    with conn(pitr) as c:
        c.execute("UPDATE t SET payload = 'changed' WHERE i % 10 = 0")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(50001, 51000) g")
    r = pitr("backup", "--physical", "--incremental", "--json")
    assert r.exit_code == 0, r.output
    incr = json.loads(r.stdout)["base"]
    assert incr["parent"] == full["base"]["id"] and incr["verified"] is True
    with conn(pitr) as c:
        c.execute("INSERT INTO t SELECT g, 'after incr' FROM generate_series(60001, 60100) g")
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        time.sleep(1.1)
    before = facts(pitr)
    with conn(pitr) as c:  # the mistake
        c.execute("DELETE FROM t WHERE i > 1000")
    return {"full": full["base"], "incr": incr, "noted": row[0].isoformat(), "before": before}


def test_restore_through_an_incremental_chain(pitr: Cli, chain: dict[str, Any]) -> None:
    full, incr = chain["full"], chain["incr"]
    assert incr["size_bytes"] < full["size_bytes"]  # only what changed (and its WAL)
    listed = {b["id"]: b["parent"] for b in status(pitr)["base_backups"]}
    assert listed == {full["id"]: None, incr["id"]: full["id"]}
    r = pitr("pitr", "status")
    assert "incremental" in r.stdout and "full" in r.stdout, r.output

    r = pitr("restore", "--physical", "--to-time", chain["noted"], "--into", "incr", "--json")
    assert r.exit_code == 0, r.output
    restored = json.loads(r.stdout)
    assert restored["base_backup"] == incr["id"]
    assert facts(restored["port"], pitr) == chain["before"]  # same rows, same bytes
    assert facts(pitr)[0] == 1000  # the running server untouched
    leftovers = Path(restored["path"]) / ".combine"
    assert not leftovers.exists()
    assert pitr("pitr", "discard", "incr", "--yes").exit_code == 0


def test_retention_keeps_what_an_incremental_needs(pitr: Cli, chain: dict[str, Any]) -> None:
    r = pitr("pitr", "prune", "--keep", "1", "--yes", "--json")
    assert r.exit_code == 0, r.output
    pruned = json.loads(r.stdout)
    assert pruned["deleted_base_backups"] == []
    assert pruned["kept"] == [chain["full"]["id"], chain["incr"]["id"]]


def test_drill_rebuilds_the_chain(pitr: Cli, chain: dict[str, Any]) -> None:
    r = pitr("backup", "verify", "--physical", "--json")
    assert r.exit_code == 0, r.output
    drilled = json.loads(r.stdout)
    assert drilled["ok"] is True and drilled["base_backup"] == chain["incr"]["id"]
    assert drilled["row_counts"]["public.t"] == 1000  # up to now: after the delete


def _nothing_written(pitr: Cli) -> None:
    restores = Path(pitr.env["MOVIE_DATA_DIR"]).resolve() / "restores"
    assert not restores.is_dir() or not list(restores.iterdir())
    assert status(pitr)["restores"] == []


def test_a_missing_chain_member_is_refused_before_anything_is_written(
    pitr: Cli, chain: dict[str, Any]
) -> None:
    base = Path(chain["full"]["path"])
    aside = base.with_name(".aside-" + base.name)
    os.rename(base, aside)
    try:
        r = pitr("restore", "--physical", "--to-time", chain["noted"], "--json")
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert "is missing" in doc["message"] and chain["full"]["id"] in doc["message"]
        assert "\n" not in doc["message"]
        _nothing_written(pitr)
    finally:
        os.rename(aside, base)


def test_a_tampered_chain_member_is_refused_before_anything_is_written(
    pitr: Cli, chain: dict[str, Any]
) -> None:
    tar = Path(chain["full"]["path"]) / "base.tar"
    kept = tar.with_name(".base.tar.kept")
    shutil.copy2(tar, kept)
    try:
        with open(tar, "r+b") as fh:  # a flipped byte in the middle of the data
            fh.seek(tar.stat().st_size // 2)
            b = fh.read(1)
            fh.seek(-1, os.SEEK_CUR)
            fh.write(bytes([b[0] ^ 0xFF]))
        r = pitr("restore", "--physical", "--to-time", chain["noted"], "--json")
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert "pg_verifybackup" in doc["message"] and chain["full"]["id"] in doc["message"]
        assert "\n" not in doc["message"]
        _nothing_written(pitr)
    finally:
        os.replace(kept, tar)


def test_kill_9_mid_combine_lists_nothing(pitr: Cli, chain: dict[str, Any]) -> None:
    restores = Path(pitr.env["MOVIE_DATA_DIR"]).resolve() / "restores"
    args = ["restore", "--physical", "--to-time", chain["noted"], "--into", "killed"]
    proc = start_moviectl(subprocess_env(**pitr.env), *args, cwd=None)
    try:
        assert wait_for(lambda: (restores / "killed" / ".combine").exists(), 120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert status(pitr)["restores"] == []
    r = pitr("restore", "--physical", "--to-time", chain["noted"], "--into", "killed", "--json")
    assert r.exit_code == 0, r.output  # the leftover was removed first
    assert facts(json.loads(r.stdout)["port"], pitr) == chain["before"]
    assert pitr("pitr", "discard", "killed", "--yes").exit_code == 0


def test_incremental_without_wal_summaries_is_refused(pitr: Cli, chain: dict[str, Any]) -> None:
    listed = [b["id"] for b in status(pitr)["base_backups"]]

    def summarize(value: str) -> None:
        with conn(pitr) as c:
            c.execute(f"ALTER SYSTEM SET summarize_wal = {value}")
            c.execute("SELECT pg_reload_conf()")
        assert wait_for(lambda: _setting(pitr) == value, 30)

    summarize("off")
    try:
        r = pitr("backup", "--physical", "--incremental", "--json")
        assert r.exit_code == 5, r.output
        doc = json.loads(r.stdout)
        assert "summarize_wal" in doc["message"] and "pitr enable" in doc["hint"]
        assert [b["id"] for b in status(pitr)["base_backups"]] == listed
    finally:
        with conn(pitr) as c:
            c.execute("ALTER SYSTEM RESET summarize_wal")
            c.execute("SELECT pg_reload_conf()")
        assert wait_for(lambda: _setting(pitr) == "on", 30)


def _setting(pitr: Cli) -> str:
    with conn(pitr) as c:
        row = c.execute("SHOW summarize_wal").fetchone()
    assert row is not None
    return str(row[0])
