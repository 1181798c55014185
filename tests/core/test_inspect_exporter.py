"""Where `moviectl inspect` and `/metrics` ask the same question as Debian's
`prometheus-postgres-exporter`, both answer alike on the same server: connections by state,
database size, dead rows, a replication slot's retained WAL, the longest transaction; and
`/metrics`' own additions (blocked sessions, the app's dead rows) agree with `inspect`.

The exporter is started here on a free 127.0.0.1 port (its `pg_stat_user_tables` query from
the package's own examples/queries.yaml, which 0.11 does not run by default). Skipped when it
is not installed, unless MOVIECTL_REQUIRE_EXPORTER=1 (CI), where its absence fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Cli, health_serving, stop, subprocess_env, wait_for
from tests.core.inspect_support import (
    Server,
    Waiter,
    doc,
    fresh_database,
    stats_server,
    wait_until_waiting,
)
from tests.ports import free_port

EXPORTER = shutil.which("prometheus-postgres-exporter")
QUERIES = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")
if EXPORTER is None and os.environ.get("MOVIECTL_REQUIRE_EXPORTER") != "1":
    pytest.skip(
        "prometheus-postgres-exporter is not installed (apt-get install "
        "prometheus-postgres-exporter; MOVIECTL_REQUIRE_EXPORTER=1 makes this a failure)",
        allow_module_level=True,
    )

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The one sample of ``name`` whose labels include ``labels`` (None: none)."""
    found = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else None


@pytest.fixture(scope="module")
def pg18(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with stats_server(tmp_path_factory.mktemp("exporter18")) as server:
        yield server


@pytest.fixture(scope="module")
def db(pg18: Server) -> Iterator[tuple[str, Cli]]:
    with fresh_database(pg18) as found:
        yield found


@pytest.fixture(scope="module")
def exporter(
    pg18: Server, db: tuple[str, Cli], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    assert EXPORTER is not None, "MOVIECTL_REQUIRE_EXPORTER=1 but it is not installed"
    shipped = QUERIES.read_text()  # its pg_stat_user_tables query, as the package ships it
    start = shipped.index("pg_stat_user_tables:")
    end = shipped.index("\n", shipped.index("pg_statio_user_tables:") - 1)
    queries = tmp_path_factory.mktemp("exporter") / "queries.yaml"
    queries.write_text(shipped[start:end])
    port = free_port()
    name, _ = db
    proc = subprocess.Popen(
        [
            EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            f"--extend.query-path={queries}",
            "--log.level=warn",
        ],
        # the password reaches it in its environment, as its documentation says, never argv
        env=subprocess_env(DATA_SOURCE_NAME=pg18.url(name) + "?sslmode=disable"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def up() -> bool:
        try:
            return value(scrape(port), "pg_up") == 1
        except OSError:
            return False

    try:
        assert wait_for(up, 30), "the exporter never answered"
        yield port
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def metrics(
    pg18: Server, db: tuple[str, Cli], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """moviectl's /metrics (`health --serve`) on the same database."""
    name, _ = db
    log = tmp_path_factory.mktemp("metrics") / "serve.log"
    with health_serving(pg18.url(name), log, MOVIE_PROBE_DEADLINE="10") as (port, _):
        yield port


def agree(read: Any, timeout: float = 30) -> None:
    """Poll until ``read()`` returns two equal answers (each side refreshes on its own
    schedule); fail showing the last pair."""
    last: list[Any] = []

    def same() -> bool:
        last[:] = read()
        return bool(last[0] == last[1])

    assert wait_for(same, timeout), last


def test_connections_by_state(pg18: Server, db: tuple[str, Cli], exporter: int) -> None:
    name, cli = db
    idle = [pg18.connect(name) for _ in range(2)]
    in_tx = [pg18.connect(name) for _ in range(3)]
    for c in in_tx:
        c.execute("BEGIN")
        c.execute("SELECT 1")
    try:

        def read() -> tuple[Any, Any]:
            rows = doc(cli("inspect", "connections", "--json"))["rows"]
            ours = [r for r in rows if r["database"] == name]
            seen = scrape(exporter)
            by_state = {
                s: value(seen, "pg_stat_activity_count", datname=name, state=s)
                for s in ("idle in transaction",)
            }
            inspected = {
                s: float(sum(r["sessions"] for r in ours if r["state"] == s)) for s in by_state
            }
            # every session of the database, counted by both: inspect's own is one more
            total = sum(
                v
                for (n, ls), v in seen.items()
                if n == "pg_stat_activity_count" and ("datname", name) in ls
            )
            return (inspected, sum(r["sessions"] for r in ours) - 1), (by_state, total)

        agree(read)
        assert read()[0][0] == {"idle in transaction": 3.0}
    finally:
        for c in idle + in_tx:
            c.close()


def test_dead_rows_database_size_and_blocked_sessions(
    pg18: Server, db: tuple[str, Cli], exporter: int, metrics: int
) -> None:
    name, cli = db
    with pg18.connect(name) as c:  # closing the session flushes its statistics
        c.execute("CREATE TABLE churn (id int) WITH (autovacuum_enabled = false)")
        c.execute("INSERT INTO churn SELECT generate_series(1, 5000)")
        c.execute("DELETE FROM churn WHERE id > 1000")

    def dead() -> tuple[Any, Any]:
        rows = doc(cli("inspect", "vacuum-stats", "--json"))["rows"]
        inspected = next(r["dead_rows"] for r in rows if r["table"] == "churn")
        exported = value(scrape(exporter), "pg_stat_user_tables_n_dead_tup", relname="churn")
        ours = value(scrape(metrics), "moviectl_table_dead_tuples", relname="churn")
        return (inspected, inspected), (exported, ours)

    # the session's exit flushes its counts, and the backend exits after the client has
    # closed: both sides could agree on 0 before it did, and the last read still see 0
    assert wait_for(lambda: dead()[0][0] == 4000, 30), dead()
    agree(dead)
    assert dead()[0][0] == 4000

    def size() -> tuple[Any, Any]:
        return (
            value(scrape(metrics), "moviectl_database_size_bytes", datname=name),
            value(scrape(exporter), "pg_database_size_bytes", datname=name),
        )

    agree(size)
    assert (size()[0] or 0) > 1024 * 1024

    with pg18.connect(name) as c:
        c.execute("CREATE TABLE held (id int)")
    holder = pg18.connect(name)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
    waiter = Waiter(pg18.connect(name), "SELECT count(*) FROM held")
    try:
        wait_until_waiting(pg18, name, waiter.pid)

        def blocked() -> tuple[Any, Any]:
            rows = doc(cli("inspect", "blocking", "--json"))["rows"]
            seen = scrape(metrics)
            return (
                float(len({r["blocked_pid"] for r in rows})),
                value(seen, "moviectl_blocked_sessions", datname=name),
            )

        agree(blocked)
        assert blocked()[0] == 1.0
        # the exporter has no such series: only locks by mode, granted or not
        assert value(scrape(exporter), "pg_locks_count", datname=name, mode="accessexclusivelock")
    finally:
        holder.close()
        waiter.join()
        waiter.conn.close()


def test_longest_transaction(
    pg18: Server, db: tuple[str, Cli], exporter: int, metrics: int
) -> None:
    name, _ = db
    with pg18.connect(name) as c:
        c.execute("BEGIN")
        c.execute("SELECT 1")
        assert wait_for(
            lambda: (value(scrape(metrics), "moviectl_longest_transaction_seconds") or 0) >= 2, 30
        )
        ours = value(scrape(metrics), "moviectl_longest_transaction_seconds", datname=name)
        theirs = max(
            v
            for (n, ls), v in scrape(exporter).items()
            if n == "pg_stat_activity_max_tx_duration" and ("datname", name) in ls
        )
        assert ours is not None and abs(ours - theirs) < 5, (ours, theirs)


def test_replication_slot(pg18: Server, db: tuple[str, Cli], exporter: int) -> None:
    name, cli = db
    slot = "exporter_cmp"
    with pg18.connect(name) as c:
        c.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        try:
            c.execute("CREATE TABLE wal_maker AS SELECT g FROM generate_series(1, 20000) g")
            rows = doc(cli("inspect", "replication", "--json"))["rows"]
            seen = scrape(exporter)
            row = next(r for r in rows if r["name"] == slot)
            retained = value(seen, "pg_replication_slots_pg_wal_lsn_diff", slot_name=slot)
            assert value(seen, "pg_replication_slots_active", slot_name=slot) == 0.0
            assert row["active"] is False and retained is not None
            # both measure from the current WAL position, read a moment apart
            assert row["retained"] > 0 and abs(row["retained"] - retained) < 1024 * 1024
        finally:
            c.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
