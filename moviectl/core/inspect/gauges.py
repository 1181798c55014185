"""The few inspect answers `/metrics` exports for dashboards (``core/health/checks.py``'s
capacity check runs them): blocked sessions, and dead rows of the app's tables.

Bounded on purpose: one count, and at most ``APP_TABLES_MAX`` tables of the app's own
schema. Everything per table, per index or per server beyond that is postgres_exporter's
(docs/runbooks/postgres.md says when to run it beside moviectl). Plain SQL, no imports: the
health probe's path loads nothing for them.
"""

from __future__ import annotations

APP_TABLES_MAX = 50

# sessions of this database waiting on a heavyweight lock that another session holds or
# awaits first: what `inspect blocking` lists (pg_blocking_pids, only for the waiters)
BLOCKED_SESSIONS = (
    "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND wait_event_type = 'Lock' AND cardinality(pg_blocking_pids(pid)) > 0)"
)

# the app's tables: those of its schema (current_schema(), where its migrations create them)
APP_DEAD_ROWS = (
    "SELECT schemaname, relname, n_dead_tup FROM pg_stat_user_tables"
    " WHERE schemaname = current_schema()"
    f" ORDER BY n_dead_tup DESC, relname LIMIT {APP_TABLES_MAX}"
)
