"""What the server spends its time on (``pg_stat_statements``) and how it is configured."""

from __future__ import annotations

from moviectl.core.inspect.model import InspectResult, Options, by_major, cols
from moviectl.core.inspect.session import Inspector, hidden_note

_IO_TIME = {
    15: "blk_read_time + blk_write_time",
    # 17 split the block I/O times into shared and local
    17: "shared_blk_read_time + shared_blk_write_time + local_blk_read_time + local_blk_write_time",
}
_STATEMENT_COLS = cols(
    ("total", "total", "seconds"),
    ("share", "share", "pct"),
    ("calls", "calls", "int"),
    ("mean", "mean", "seconds"),
    ("io", "sync I/O", "seconds"),
    ("rows", "rows", "int"),
    ("query", "query", "sql"),
)


def _statements_sql(major: int, schema: str, order: str) -> str:
    return f"""
SELECT total_exec_time / 1000 AS total,
       total_exec_time * 100 / nullif(sum(total_exec_time) OVER (), 0) AS share,
       calls, mean_exec_time / 1000 AS mean, ({by_major(_IO_TIME, major)}) / 1000 AS io,
       rows, query
  FROM "{schema}".pg_stat_statements
 WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY {order} DESC LIMIT %(limit)s
"""


ENABLE = "add pg_stat_statements to shared_preload_libraries and restart the server"


def _preloaded(i: Inspector) -> bool | None:
    """Is the library preloaded? None when this role may not read the setting."""
    import psycopg

    try:
        return "pg_stat_statements" in str(i.value("SHOW shared_preload_libraries"))
    except psycopg.errors.InsufficientPrivilege:  # autocommit: nothing to roll back
        return None


def _statements(i: Inspector, o: Options, command: str, title: str, order: str) -> InspectResult:
    import psycopg

    def unavailable(*steps: str) -> InspectResult:
        hint = "pg_stat_statements is not enabled: " + ", then ".join(steps)
        return InspectResult(command, title, i.major, _STATEMENT_COLS, [], [], hint)

    schema = i.value(
        "SELECT extnamespace::regnamespace::text FROM pg_extension "
        "WHERE extname = 'pg_stat_statements'"
    )
    if not schema:
        db = i.value("SELECT current_database()")
        create = f"run CREATE EXTENSION pg_stat_statements in database {db}"
        return unavailable(create) if _preloaded(i) else unavailable(ENABLE, create)
    try:
        rows = i.rows(_statements_sql(i.major, str(schema), order), {"limit": o.limit})
    except psycopg.errors.ObjectNotInPrerequisiteState:  # created, but not preloaded
        return unavailable(ENABLE)
    return InspectResult(command, title, i.major, _STATEMENT_COLS, rows, hidden_note(i, rows))


def outliers(i: Inspector, o: Options) -> InspectResult:
    return _statements(i, o, "outliers", "Statements by total execution time", "total_exec_time")


def calls(i: Inspector, o: Options) -> InspectResult:
    return _statements(i, o, "calls", "Statements by number of calls", "calls")


MATTERS = (
    "shared_buffers effective_cache_size work_mem maintenance_work_mem max_connections "
    "random_page_cost effective_io_concurrency io_method max_wal_size min_wal_size "
    "checkpoint_timeout checkpoint_completion_target wal_level max_wal_senders "
    "max_replication_slots max_slot_wal_keep_size wal_keep_size autovacuum "
    "autovacuum_max_workers autovacuum_naptime autovacuum_vacuum_scale_factor "
    "autovacuum_vacuum_cost_limit autovacuum_freeze_max_age statement_timeout lock_timeout "
    "idle_in_transaction_session_timeout idle_session_timeout log_min_duration_statement "
    "log_lock_waits deadlock_timeout shared_preload_libraries track_io_timing "
    "default_statistics_target max_parallel_workers_per_gather jit huge_pages "
    "synchronous_commit fsync full_page_writes"
).split()
SETTINGS = """
SELECT name,
       -- this connection's own timeouts are not the server's: show what it resets to
       CASE WHEN source = 'session' THEN reset_val || coalesce(unit, '')
            ELSE current_setting(name) END AS value,
       CASE WHEN source = 'session' THEN 'before this session' ELSE source END AS source,
       CASE WHEN sourcefile IS NOT NULL THEN sourcefile || ':' || sourceline END AS file,
       pending_restart, short_desc AS description
  FROM pg_settings WHERE name = ANY(%(names)s)
 ORDER BY array_position(%(names)s, name)
"""


def settings(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(SETTINGS, {"names": list(MATTERS)})
    notes = []
    if any(r["pending_restart"] for r in rows):
        notes.append("a setting marked pending restart takes effect only after a restart")
    if all(r["file"] is None for r in rows):
        notes.append("the files values came from are shown to pg_read_all_settings members only")
    return InspectResult(
        "settings",
        "The settings that matter most, with their source",
        i.major,
        cols(
            ("name", "setting"),
            ("value", "value"),
            ("source", "source"),
            ("file", "file"),
            ("pending_restart", "pending restart"),
        ),  # the description: JSON only
        rows,
        notes,
    )
