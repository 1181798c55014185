"""`moviectl inspect` on Debian's PostgreSQL 15 (the oldest supported major, whose catalogs
lack 16's last-scan times, 17's split I/O times and slot invalidation, 18's vacuum times):
every subcommand answers, and the conditions of the PostgreSQL 18 tests are found here too."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from moviectl.core.inspect.registry import QUERIES
from tests.conftest import Cli
from tests.core.inspect_support import (
    PG15,
    Server,
    Waiter,
    doc,
    fresh_database,
    stats_server,
    wait_until_waiting,
)


@pytest.fixture(scope="module")
def pg15(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not (PG15 / "postgres").exists():
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL 15 at {PG15} (.ci/run installs postgresql-15)")
        pytest.skip(f"no PostgreSQL 15 at {PG15} (apt-get install postgresql-15)")
    with stats_server(tmp_path_factory.mktemp("inspect15"), PG15) as server:
        yield server


@pytest.fixture
def db(pg15: Server) -> Iterator[tuple[str, Cli]]:
    with fresh_database(pg15) as found:
        yield found


def test_every_subcommand_on_postgresql_15(pg15: Server, db: tuple[str, Cli]) -> None:
    name, cli = db
    with pg15.connect(name) as c:
        c.execute("CREATE TABLE films (id int PRIMARY KEY, title text)")
        c.execute("CREATE INDEX films_title ON films (title)")
        c.execute("INSERT INTO films SELECT g, 't' || g FROM generate_series(1, 1000) g")
        c.execute("ANALYZE films")
        c.execute("SELECT count(*) AS pg15_marker FROM films")
    for sub in QUERIES:
        people = cli("inspect", sub)
        assert people.exit_code == 0, (sub, people.output)
        report = doc(cli("inspect", sub, "--json"))
        assert report["server_major"] == 15, sub
    unused = doc(cli("inspect", "unused-indexes", "--json"))["rows"]
    assert [r["last_scan_age"] for r in unused if r["index"] == "films_title"] == [None]
    outliers = doc(cli("inspect", "outliers", "--json"))["rows"]
    assert any("pg15_marker" in r["query"] for r in outliers)
    assert doc(cli("inspect", "diagnose", "--json"))["server_major"] == 15


def test_blocking_and_a_slot_on_postgresql_15(pg15: Server, db: tuple[str, Cli]) -> None:
    name, cli = db
    with pg15.connect(name) as c:
        c.execute("CREATE TABLE films (id int)")
        c.execute("SELECT pg_create_physical_replication_slot(%s, true)", (f"s_{name}",))
    holder = pg15.connect(name)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE films IN ACCESS EXCLUSIVE MODE")
    waiter = Waiter(pg15.connect(name), "SELECT * FROM films")
    try:
        wait_until_waiting(pg15, name, waiter.pid)
        rows = doc(cli("inspect", "blocking", "--json"))["rows"]
        assert (waiter.pid, holder.info.backend_pid) in [
            (r["blocked_pid"], r["blocking_pid"]) for r in rows
        ]
        slots = doc(cli("inspect", "replication", "--json"))["rows"]
        assert [r["active"] for r in slots if r["name"] == f"s_{name}"] == [False]
        report = doc(cli("inspect", "diagnose", "--blocking-seconds", "0", "--json"), 3)
        status = {f["check"]: f["status"] for f in report["findings"]}
        assert status["blocking"] == "red" and status["replication-slots"] == "yellow"
        holder.execute("ROLLBACK")
        waiter.join()
    finally:
        holder.close()
        waiter.conn.close()
        with pg15.connect(name) as c:
            c.execute("SELECT pg_drop_replication_slot(%s)", (f"s_{name}",))
