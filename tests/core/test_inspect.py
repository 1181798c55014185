"""`moviectl inspect` on the embedded PostgreSQL 18 (pg_stat_statements preloaded): each test
creates the condition a subcommand reports (a lock and its waiter, an idle transaction, an
unused index, dead rows, a replication slot) and asserts the finding and its fix."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from moviectl.core.inspect.registry import QUERIES
from tests.conftest import Cli, wait_for
from tests.core.inspect_support import (
    Server,
    Waiter,
    doc,
    fresh_database,
    stats_server,
    wait_until_waiting,
)


@pytest.fixture(scope="module")
def pg18(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with stats_server(tmp_path_factory.mktemp("inspect18")) as server:
        yield server


@pytest.fixture
def db(pg18: Server) -> Iterator[tuple[str, Cli]]:
    with fresh_database(pg18) as found:
        yield found


def finding(report: dict[str, Any], check: str) -> dict[str, Any]:
    return next(f for f in report["findings"] if f["check"] == check)


def test_every_subcommand_answers_as_a_table_and_as_json(db: tuple[str, Cli]) -> None:
    _, cli = db
    for sub in QUERIES:
        people = cli("inspect", sub)
        assert people.exit_code == 0, (sub, people.output)
        assert "PostgreSQL 18" in people.stdout, sub
        report = doc(cli("inspect", sub, "--json"))
        assert report["command"] == sub and report["server_major"] == 18
        assert isinstance(report["rows"], list)


def test_unknown_subcommand_lists_the_valid_ones(db: tuple[str, Cli]) -> None:
    _, cli = db
    r = cli("--json", "inspect", "lockz")
    report = doc(r, 2)
    assert "Valid subcommands:" in report["message"] and "blocking" in report["message"]


def test_a_lock_and_its_waiter_blocking_locks_diagnose_and_kill(
    pg18: Server, db: tuple[str, Cli]
) -> None:
    name, cli = db
    with pg18.connect(name) as setup:
        setup.execute("CREATE TABLE films (id int PRIMARY KEY, title text)")
        setup.execute("INSERT INTO films SELECT g, 'f' || g FROM generate_series(1, 500) g")
    holder = pg18.connect(name, application_name="psql")
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE films IN ACCESS EXCLUSIVE MODE")
    waiter = Waiter(pg18.connect(name), "SELECT count(*) FROM films")
    try:
        wait_until_waiting(pg18, name, waiter.pid)
        rows = doc(cli("inspect", "blocking", "--json"))["rows"]
        pair = [(r["blocked_pid"], r["blocking_pid"]) for r in rows]
        assert (waiter.pid, holder.info.backend_pid) in pair
        assert any("count(*) FROM films" in r["blocked_query"] for r in rows)
        locks = doc(cli("inspect", "locks", "--json"))["rows"]
        assert {"pid": waiter.pid, "granted": False, "object": "films"}.items() <= next(
            r for r in locks if r["pid"] == waiter.pid and not r["granted"]
        ).items()
        # the sizes of the locked table come from the catalog: never queued behind the lock
        for sub in ("table-sizes", "total-sizes", "index-sizes", "unused-indexes"):
            assert cli("inspect", sub, "--json").exit_code == 0, sub
        assert "films" in [r["table"] for r in doc(cli("inspect", "table-sizes", "--json"))["rows"]]

        report = doc(cli("inspect", "diagnose", "--blocking-seconds", "0", "--json"), 3)
        assert report["status"] == "red"
        blocked = finding(report, "blocking")
        assert blocked["status"] == "red"
        assert f"moviectl inspect kill {holder.info.backend_pid}" in blocked["fix"]

        r = cli("inspect", "kill", str(holder.info.backend_pid), "--terminate", "--yes")
        assert r.exit_code == 0, r.output
        assert f"terminated pid {holder.info.backend_pid}" in r.stdout
        assert "psql" in r.stdout  # names what it stopped
        waiter.join()
        assert waiter.error is None  # the waiter got its lock once the holder was gone
    finally:
        holder.close()
        waiter.conn.close()


def test_the_sizes_never_wait_for_a_locked_index(pg18: Server, db: tuple[str, Cli]) -> None:
    """REINDEX holds ACCESS EXCLUSIVE on the index alone (the table is only SHARE locked):
    total-sizes reads that index from the catalog instead of queueing behind it."""
    name, cli = db
    with pg18.connect(name) as setup:
        setup.execute("CREATE TABLE shows (id int PRIMARY KEY, title text)")
        setup.execute("INSERT INTO shows SELECT g, 's' || g FROM generate_series(1, 2000) g")
        setup.execute("ANALYZE shows")
    holder = pg18.connect(name)
    holder.execute("BEGIN")
    holder.execute("REINDEX INDEX shows_pkey")
    try:
        for sub in ("total-sizes", "index-sizes", "table-sizes"):
            t = time.monotonic()
            rows = doc(cli("inspect", sub, "--json"))["rows"]
            assert time.monotonic() - t < 30, sub  # never the 5 s statement timeout per row
            assert any(r["table"] == "shows" for r in rows), sub
        totals = doc(cli("inspect", "total-sizes", "--json"))["rows"]
        row = next(r for r in totals if r["table"] == "shows")
        assert row["size"] > row["table_size"] > 0  # the index counted, from pg_class
    finally:
        holder.close()


def test_an_idle_transaction_in_long_running_and_diagnose(
    pg18: Server, db: tuple[str, Cli]
) -> None:
    name, cli = db
    with pg18.connect(name) as idle:
        idle.execute("BEGIN")
        idle.execute("SELECT 'left open by test'")
        time.sleep(1.2)
        rows = doc(cli("inspect", "long-running", "--min-seconds", "1", "--json"))["rows"]
        row = next(r for r in rows if r["pid"] == idle.info.backend_pid)
        assert row["state"] == "idle in transaction" and row["duration"] >= 1
        assert "left open by test" in row["query"]
        people = cli("inspect", "long-running", "--min-seconds", "1")
        assert "idle_in_transaction_session_timeout" in people.stdout

        report = doc(cli("inspect", "diagnose", "--idle-tx-seconds", "1", "--json"), 1)
        f = finding(report, "idle-in-transaction")
        assert f["status"] == "yellow" and str(idle.info.backend_pid) in f["summary"]
        assert "idle_in_transaction_session_timeout" in f["fix"]
        people = cli("inspect", "diagnose", "--idle-tx-seconds", "1")
        assert people.exit_code == 1 and "fix:" in people.stdout


def test_unused_and_duplicate_indexes(pg18: Server, db: tuple[str, Cli]) -> None:
    name, cli = db
    with pg18.connect(name) as c:
        c.execute("CREATE TABLE people (id int PRIMARY KEY, email text, city text)")
        c.execute(
            "INSERT INTO people SELECT g, 'p' || g || '@x', 'c' || (g % 50)"
            " FROM generate_series(1, 20000) g"
        )
        c.execute("CREATE INDEX people_city ON people (city)")
        c.execute("CREATE INDEX people_city_again ON people (city)")
        c.execute("CREATE UNIQUE INDEX people_email ON people (email)")
    unused = doc(cli("inspect", "unused-indexes", "--json"))
    names = {r["index"] for r in unused["rows"]}
    assert {"people_city", "people_city_again"} <= names
    assert "people_email" not in names and "people_pkey" not in names  # constraints stay
    assert all(r["size"] > 0 for r in unused["rows"])
    dups = doc(cli("inspect", "duplicate-indexes", "--json"))["rows"]
    assert dups[0]["indexes"] == "people_city, people_city_again"

    report = doc(cli("inspect", "diagnose", "--unused-index-bytes", "1", "--json"), 1)
    f = finding(report, "unused-indexes")
    assert f["status"] == "yellow" and "DROP INDEX CONCURRENTLY" in f["fix"]


def test_dead_rows_after_a_bulk_delete_with_autovacuum_off(
    pg18: Server, db: tuple[str, Cli]
) -> None:
    name, cli = db
    with pg18.connect(name) as c:  # closing the session flushes its statistics
        c.execute("CREATE TABLE events (id int, body text) WITH (autovacuum_enabled = false)")
        c.execute("INSERT INTO events SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g")
        c.execute("DELETE FROM events WHERE id > 2000")
        c.execute("ANALYZE events")

    def dead() -> dict[str, Any]:
        rows = doc(cli("inspect", "vacuum-stats", "--json"))["rows"]
        return next(r for r in rows if r["table"] == "events")

    assert wait_for(lambda: dead()["dead_rows"] >= 18000, 30)
    row = dead()
    assert row["autovacuum"] is False and row["vacuum_due"] is True
    assert row["dead_pct"] > 80 and row["xid_age"] >= 1

    bloat = doc(cli("inspect", "bloat", "--json"))
    events = next(r for r in bloat["rows"] if r["table"] == "events")
    assert events["wasted_pct"] > 50
    assert "ESTIMATE" in bloat["title"] and "estimate" in bloat["notes"][0]

    report = doc(cli("inspect", "diagnose", "--json"), 1)
    f = finding(report, "dead-rows")
    assert f["status"] == "yellow" and "events" in f["summary"]
    assert "RESET (autovacuum_enabled)" in f["fix"]


def test_a_replication_slot_holding_wal(pg18: Server, db: tuple[str, Cli]) -> None:
    name, cli = db
    slot = f"keep_{name}"
    with pg18.connect(name) as c:
        c.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        try:
            c.execute("CREATE TABLE wal_maker AS SELECT g FROM generate_series(1, 20000) g")
            rows = doc(cli("inspect", "replication", "--json"))["rows"]
            row = next(r for r in rows if r["name"] == slot)
            assert row["kind"] == "slot" and row["active"] is False and row["retained"] > 0
            report = doc(cli("inspect", "diagnose", "--json"), 1)
            assert finding(report, "replication-slots")["status"] == "yellow"
            report = doc(cli("inspect", "diagnose", "--slot-wal-bytes", "1", "--json"), 3)
            f = finding(report, "replication-slots")
            assert f["status"] == "red" and f"pg_drop_replication_slot('{slot}')" in f["fix"]
        finally:
            c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))


def test_outliers_and_calls_from_pg_stat_statements(pg18: Server, db: tuple[str, Cli]) -> None:
    name, cli = db
    with pg18.connect(name) as c:
        for _ in range(7):
            c.execute("SELECT pg_sleep(0.01) AS outlier_marker")
    for sub in ("outliers", "calls"):
        rows = doc(cli("inspect", sub, "--json"))["rows"]
        row = next(r for r in rows if "outlier_marker" in r["query"])
        assert row["calls"] == 7 and row["total"] > 0.05

    with pg18.connect(name) as c:
        c.execute("DROP EXTENSION pg_stat_statements")
    r = cli("inspect", "outliers")
    assert r.exit_code == 1
    assert r.stdout.strip().count("\n") == 0  # one line, saying how to enable it
    assert f"CREATE EXTENSION pg_stat_statements in database {name}" in r.stdout


def test_outliers_on_a_server_without_the_library(cli: Cli) -> None:
    report = doc(cli("inspect", "outliers", "--json"), 1)
    assert report["rows"] == [] and "shared_preload_libraries" in report["unavailable"]


def test_a_role_without_pg_read_all_stats_sees_hidden_queries(
    pg18: Server, db: tuple[str, Cli]
) -> None:
    name, _ = db
    role = f"peek_{name}"
    with pg18.connect(name) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'peek-secret'")
    peek = Cli({"MOVIE_DATABASE_URL": pg18.url(name, role, "peek-secret")})
    try:
        with pg18.connect(name) as idle:
            idle.execute("BEGIN")
            idle.execute("SELECT 'secret business'")
            time.sleep(0.3)
            r = peek("inspect", "long-running", "--min-seconds", "0", "--json")
            report = doc(r)
            assert "secret business" not in r.stdout
            row = next(x for x in report["rows"] if x["pid"] == idle.info.backend_pid)
            assert row["query"] == "(hidden)"
            assert any(f"GRANT pg_read_all_stats TO {role}" in n for n in report["notes"])
            people = peek("inspect", "connections")
            assert people.exit_code == 0 and "GRANT pg_read_all_stats" in people.stdout
            for sub in ("locks", "blocking", "outliers", "diagnose"):
                r = peek("inspect", sub)
                assert r.exit_code in (0, 1), (sub, r.output)
                assert "Traceback" not in r.output
            r = peek("inspect", "kill", str(idle.info.backend_pid), "--yes", "--json")
            assert r.exit_code == 4, r.output  # the server refuses: permission denied
            assert "Traceback" not in r.output
            assert idle.execute("SELECT 1").fetchone() == (1,)  # untouched
    finally:
        with pg18.connect(name) as c:
            c.execute(f"DROP OWNED BY {role}")
            c.execute(f"DROP ROLE {role}")


def test_kill_refuses_its_own_and_replication_sessions_and_asks_first(
    pg18: Server, db: tuple[str, Cli]
) -> None:
    name, cli = db
    with pg18.connect(name, application_name="moviectl") as ours:
        r = cli("inspect", "kill", str(ours.info.backend_pid), "--yes")
        assert r.exit_code == 5 and "moviectl's own" in r.output
    walsender = psycopg.connect(pg18.url(name), replication="database", autocommit=True)
    try:
        r = cli("inspect", "kill", str(walsender.info.backend_pid), "--yes")
        assert r.exit_code == 5 and "replication" in r.output
    finally:
        walsender.close()
    r = cli("inspect", "kill", "999999", "--yes")
    assert r.exit_code == 2 and "no session with pid 999999" in r.output

    sleeper = Waiter(pg18.connect(name), "SELECT pg_sleep(60)")
    try:
        assert wait_for(lambda: active(pg18, name, sleeper.pid), 30)
        r = cli("inspect", "kill", str(sleeper.pid))  # no terminal, no --yes: nothing done
        assert r.exit_code == 5 and "confirmation needed" in r.output
        assert active(pg18, name, sleeper.pid)
        report = doc(cli("inspect", "kill", str(sleeper.pid), "--yes", "--json"))
        assert report["action"] == "cancel" and report["stopped"] is True
        assert "pg_sleep(60)" in report["message"]
        sleeper.join()
        assert isinstance(sleeper.error, psycopg.errors.QueryCanceled)
        assert sleeper.conn.execute("SELECT 1").fetchone() == (1,)  # the session lives on
    finally:
        sleeper.conn.close()


def active(server: Server, database: str, pid: int) -> bool:
    with server.connect(database) as c:
        row = c.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return row is not None and row[0] == "active"
