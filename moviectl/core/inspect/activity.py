"""Who is connected and what waits for what: locks, blocking chains, long-running queries
and idle transactions, connections, replication.

A role without ``pg_read_all_stats`` sees other roles' sessions without their query;
those are shown as hidden, with the grant that reveals them (``session.hidden_note``).
"""

from __future__ import annotations

from typing import Any

from moviectl.core.inspect.model import InspectResult, Options, by_major, cols
from moviectl.core.inspect.session import Inspector, hidden_note

THIS_DB = "(SELECT oid FROM pg_database WHERE datname = current_database())"
# a client's session; another role's shows no backend_type to a role without
# pg_read_all_stats, but still its database (the server's own processes have none)
CLIENT = "(backend_type = 'client backend' OR (backend_type IS NULL AND datid IS NOT NULL))"

LOCKS = f"""
SELECT l.pid, l.locktype,
       coalesce(l.relation::regclass::text, l.transactionid::text, l.virtualxid,
                l.classid::text || '/' || l.objid::text, '') AS object,
       l.mode, l.granted,
       extract(epoch FROM now() - coalesce(l.waitstart, a.xact_start, a.query_start))::float8
         AS age,
       a.application_name AS application, a.state, a.query
  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.pid <> pg_backend_pid() AND l.locktype <> 'virtualxid'
   AND (l.database IS NULL OR l.database = {THIS_DB})
   AND NOT (l.locktype = 'relation' AND l.relation IN
            (SELECT oid FROM pg_class WHERE relnamespace = 'pg_catalog'::regnamespace)
            AND l.granted AND l.mode = 'AccessShareLock')
 ORDER BY l.granted, age DESC NULLS LAST, l.pid LIMIT %(limit)s
"""


def locks(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(LOCKS, {"limit": o.limit})
    return InspectResult(
        "locks",
        "Locks held and awaited (waiting ones first)",
        i.major,
        cols(
            ("pid", "pid", "int"),
            ("locktype", "type"),
            ("object", "object"),
            ("mode", "mode"),
            ("granted", "granted"),
            ("age", "age", "seconds"),
            ("application", "application"),
            ("state", "state"),
            ("query", "query", "sql"),
        ),
        rows,
        hidden_note(i, rows),
    )


# pg_blocking_pids sees every kind of wait on a heavyweight lock (relation, tuple,
# transaction id, advisory), and the soft blocks of a lock queue, not only row locks
BLOCKING = """
SELECT w.pid AS blocked_pid, w.application_name AS blocked_application,
       extract(epoch FROM now() - w.query_start)::float8 AS waiting,
       w.query AS blocked_query,
       b.pid AS blocking_pid, b.application_name AS blocking_application, b.state AS blocking_state,
       extract(epoch FROM now() - b.xact_start)::float8 AS blocking_xact_age,
       b.query AS blocking_query
  FROM pg_stat_activity w
  CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid)
  JOIN pg_stat_activity b ON b.pid = bp.pid
 WHERE w.wait_event_type = 'Lock'
 ORDER BY waiting DESC NULLS LAST, w.pid LIMIT %(limit)s
"""


def blocking(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(BLOCKING, {"limit": o.limit})
    notes = hidden_note(i, rows, "blocked_query") + hidden_note(i, rows, "blocking_query")
    notes = list(dict.fromkeys(notes))
    if rows:
        notes.append(
            "end a blocker with `moviectl inspect kill PID` (--terminate to disconnect it)"
        )
    return InspectResult(
        "blocking",
        "Sessions waiting for a lock, and the sessions they wait for",
        i.major,
        cols(
            ("blocked_pid", "blocked pid", "int"),
            ("waiting", "waiting", "seconds"),
            ("blocked_query", "blocked query", "sql"),
            ("blocking_pid", "blocking pid", "int"),
            ("blocking_state", "blocker state"),
            ("blocking_xact_age", "blocker's transaction", "seconds"),
            ("blocking_query", "blocker's query", "sql"),
        ),
        rows,
        notes,
    )


LONG_RUNNING = f"""
SELECT pid, usename AS user, application_name AS application, client_addr::text AS client,
       coalesce(state, '(hidden)') AS state,
       extract(epoch FROM now() - CASE WHEN state LIKE 'idle in transaction%%'
                                       THEN state_change ELSE query_start END)::float8
         AS duration,
       extract(epoch FROM now() - xact_start)::float8 AS xact_age,
       wait_event_type || ':' || wait_event AS wait, query
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND {CLIENT}
   AND (state IS NULL  -- hidden: its age is unknown, so it is shown
        OR (state LIKE 'idle in transaction%%' OR state = 'active')
           AND now() - coalesce(xact_start, query_start) >= make_interval(secs => %(min)s))
 ORDER BY coalesce(xact_start, query_start) NULLS LAST, pid LIMIT %(limit)s
"""


def long_running(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(LONG_RUNNING, {"limit": o.limit, "min": o.min_seconds})
    notes = hidden_note(i, rows)
    if any((r["state"] or "").startswith("idle in transaction") for r in rows):
        notes.append(
            "an idle transaction holds its locks and stops VACUUM: fix the client, or set "
            "idle_in_transaction_session_timeout"
        )
    return InspectResult(
        "long-running",
        f"Queries and transactions open for {o.min_seconds:g} s or more",
        i.major,
        cols(
            ("pid", "pid", "int"),
            ("user", "user"),
            ("application", "application"),
            ("client", "client"),
            ("state", "state"),
            ("duration", "for", "seconds"),
            ("xact_age", "transaction", "seconds"),
            ("wait", "waiting on"),
            ("query", "query", "sql"),
        ),
        rows,
        notes,
    )


CONNECTIONS = f"""
SELECT coalesce(state, '(hidden)') AS state, coalesce(usename, '(hidden)') AS user,
       application_name AS application, coalesce(client_addr::text, 'local') AS client,
       datname AS database, count(*) AS sessions,
       max(extract(epoch FROM now() - backend_start))::float8 AS oldest
  FROM pg_stat_activity
 WHERE {CLIENT}
 GROUP BY 1, 2, 3, 4, 5 ORDER BY sessions DESC, 1, 2, 3 LIMIT %(limit)s
"""
CAPACITY = f"""
SELECT (SELECT count(*) FROM pg_stat_activity WHERE {CLIENT}),
       current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
"""


def connections(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(CONNECTIONS, {"limit": o.limit})
    used, most, reserved = i.conn.execute(CAPACITY).fetchone() or (0, 0, 0)
    notes = [f"{used} of max_connections {most} in use ({reserved} reserved for superusers)"]
    if not i.reads_all_stats and any(r["state"] == "(hidden)" for r in rows):
        notes.append(f"other roles' sessions are hidden: `{i.grant_hint}` reveals them")
    return InspectResult(
        "connections",
        "Client connections by state, user, application and client",
        i.major,
        cols(
            ("state", "state"),
            ("user", "user"),
            ("application", "application"),
            ("client", "client"),
            ("database", "database"),
            ("sessions", "sessions", "int"),
            ("oldest", "oldest", "seconds"),
        ),
        rows,
        notes,
    )


CURRENT_LSN = (
    "CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END"
)
_SLOT_DETAIL = {
    15: "coalesce(database, '') || coalesce(' ' || plugin, '')",
    # 17 says why a slot was invalidated and since when it has been unused
    17: "coalesce(database, '') || coalesce(' ' || plugin, '')"
    " || coalesce(' invalidated: ' || invalidation_reason, '')"
    " || coalesce(' unused for ' || round(extract(epoch FROM now() - inactive_since))"
    " || ' s', '')",
}


def _replication_sql(major: int) -> str:
    detail = by_major(_SLOT_DETAIL, major)
    return f"""
SELECT 'slot' AS kind, slot_name AS name, slot_type || coalesce(' ' || wal_status, '') AS state,
       active, pg_wal_lsn_diff({CURRENT_LSN}, coalesce(restart_lsn, confirmed_flush_lsn))::bigint
         AS retained, NULL::float8 AS lag, {detail} AS detail
  FROM pg_replication_slots
UNION ALL
SELECT 'standby', application_name, coalesce(state, '(hidden)') || ' ' || coalesce(sync_state, ''),
       true, pg_wal_lsn_diff({CURRENT_LSN}, replay_lsn)::bigint,
       extract(epoch FROM replay_lag)::float8, coalesce(client_addr::text, 'local')
  FROM pg_stat_replication
 ORDER BY 1, 5 DESC NULLS LAST LIMIT %(limit)s
"""


def replication(i: Inspector, o: Options) -> InspectResult:
    rows: list[dict[str, Any]] = i.rows(_replication_sql(i.major), {"limit": o.limit})
    notes = []
    if any(r["kind"] == "slot" and not r["active"] for r in rows):
        notes.append(
            "an inactive slot keeps WAL until its consumer returns: drop it with "
            "SELECT pg_drop_replication_slot('name') if it never will"
        )
    return InspectResult(
        "replication",
        "Replication slots and standbys: WAL retained and lag",
        i.major,
        cols(
            ("kind", "kind"),
            ("name", "name"),
            ("state", "state"),
            ("active", "active"),
            ("retained", "WAL behind", "bytes"),
            ("lag", "replay lag", "seconds"),
            ("detail", "detail"),
        ),
        rows,
        notes,
    )
