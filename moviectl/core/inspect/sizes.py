"""How big things are and how much is dead: sizes, estimated bloat, vacuum and wraparound."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moviectl.core.inspect.model import InspectResult, Options, by_major, cols
from moviectl.core.inspect.session import LOCKED, Inspector, safe_size

USER_RELS = """
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
"""

TABLE_SIZES = f"""
SELECT n.nspname AS schema, c.relname AS table, {safe_size("c.oid", "pg_table_size")} AS size,
       c.reltuples::bigint AS est_rows
{USER_RELS} AND c.relkind IN ('r', 'm', 'p')
 ORDER BY 3 DESC, 1, 2 LIMIT %(limit)s
"""
INDEX_SIZES = f"""
SELECT n.nspname AS schema, x.indrelid::regclass::text AS table, c.relname AS index,
       {safe_size("c.oid")} AS size
  FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY 4 DESC, 1, 3 LIMIT %(limit)s
"""
# the total as table + indexes: each file is statted once (pg_total_relation_size and
# pg_table_size side by side stat the heap and TOAST twice); OFFSET 0 keeps the planner
# from inlining the sizes into both output columns
TOTAL_SIZES = f"""
SELECT schema, "table", table_size + index_size AS size, table_size, est_rows FROM (
SELECT n.nspname AS schema, c.relname AS table, c.reltuples::bigint AS est_rows,
       {safe_size("c.oid", "pg_table_size")} AS table_size,
       {safe_size("c.oid", "pg_indexes_size")} AS index_size
{USER_RELS} AND c.relkind IN ('r', 'm') OFFSET 0) s
 ORDER BY 3 DESC, 1, 2 LIMIT %(limit)s
"""
LOCK_NOTE = (
    "a relation under an ACCESS EXCLUSIVE lock is not opened: its size is the catalog's "
    "(as of its last VACUUM or ANALYZE)"
)


# one table's live size, as total-sizes reads it (never waiting for a lock on it)
RELATION_SIZE = f"""
SELECT c.reltuples::bigint, {safe_size("c.oid", "pg_total_relation_size")},
       c.oid IN {LOCKED}
  FROM pg_class c WHERE c.oid = to_regclass(%(t)s)
"""


@dataclass(frozen=True)
class LiveSize:
    est_rows: int  # pg_class.reltuples: -1 when never vacuumed or analysed
    bytes: int  # table, TOAST and indexes (from the catalog while it is locked)
    locked: bool  # someone holds or awaits ACCESS EXCLUSIVE on it now


def live_size(conn: Any, table: str) -> LiveSize | None:
    """The live size of ``table`` (a quoted name) on a psycopg connection, or None when no
    such table exists: what ``migrate lint`` weighs a lock hazard by."""
    row = conn.execute(RELATION_SIZE, {"t": table}).fetchone()
    if row is None:
        return None
    return LiveSize(int(row[0]), int(row[1] or 0), bool(row[2]))


def table_sizes(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "table-sizes",
        "Tables by size (with TOAST, without indexes)",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("size", "size", "bytes"),
            ("est_rows", "rows (est.)", "int"),
        ),
        i.rows(TABLE_SIZES, {"limit": o.limit}),
        [LOCK_NOTE],
    )


def index_sizes(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "index-sizes",
        "Indexes by size",
        i.major,
        cols(
            ("schema", "schema"), ("table", "table"), ("index", "index"), ("size", "size", "bytes")
        ),
        i.rows(INDEX_SIZES, {"limit": o.limit}),
        [LOCK_NOTE],
    )


def total_sizes(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "total-sizes",
        "Tables by total size (with TOAST and indexes)",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("size", "total", "bytes"),
            ("table_size", "table", "bytes"),
            ("est_rows", "rows (est.)", "int"),
        ),
        i.rows(TOTAL_SIZES, {"limit": o.limit}),
        [LOCK_NOTE],
    )


# rows of ~row_width bytes, with a 24-byte tuple header and a 4-byte line pointer each,
# on pages of block_size less a 24-byte page header: the pages the table would need
BLOAT = """
WITH widths AS (
  SELECT schemaname, tablename, sum((1 - null_frac) * avg_width) AS row_width
    FROM pg_stats WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
   GROUP BY 1, 2
), t AS (
  SELECT n.nspname AS schema, c.relname AS table, c.relpages::bigint AS pages,
         greatest(c.reltuples, 0) AS tuples, w.row_width,
         current_setting('block_size')::bigint AS bs
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN widths w ON w.schemaname = n.nspname AND w.tablename = c.relname
   WHERE c.relkind IN ('r', 'm')
), e AS (
  SELECT t.*, greatest(pages - ceil(tuples * (ceil(row_width / 8) * 8 + 28) / (bs - 24)), 0)
           ::bigint AS wasted_pages
    FROM t
)
SELECT schema, "table", pages * bs AS size, wasted_pages * bs AS wasted,
       wasted_pages::float8 * 100 / nullif(pages, 0) AS wasted_pct
  FROM e ORDER BY wasted DESC, schema, "table" LIMIT %(limit)s
"""


def bloat(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "bloat",
        "Table bloat (an ESTIMATE from the planner's statistics)",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("size", "size", "bytes"),
            ("wasted", "wasted (est.)", "bytes"),
            ("wasted_pct", "wasted (est.)", "pct"),
        ),
        i.rows(BLOAT, {"limit": o.limit}),
        [
            "an estimate from pg_stats and pg_class (as of the last ANALYZE), not a measurement:"
            " pgstattuple measures",
            "tables never analyzed are left out; run ANALYZE first for a fresh estimate",
            "reclaim space with VACUUM (reuse) or pg_repack / VACUUM FULL (returns it; FULL locks)",
        ],
    )


_VACUUM_COLS = """
SELECT s.schemaname AS schema, s.relname AS table, s.n_live_tup AS live_rows,
       s.n_dead_tup AS dead_rows,
       s.n_dead_tup::float8 * 100 / nullif(s.n_live_tup + s.n_dead_tup, 0) AS dead_pct,
       extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8
         AS last_vacuum_age,
       extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8
         AS last_analyze_age,
       age(c.relfrozenxid) AS xid_age,
       age(c.relfrozenxid)::float8 * 100 / current_setting('autovacuum_freeze_max_age')::float8
         AS wraparound_pct,
       coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)
                  WHERE option_name = 'autovacuum_enabled'), 'on') <> 'false'
         AND current_setting('autovacuum') = 'on' AS autovacuum,
       s.n_dead_tup > current_setting('autovacuum_vacuum_threshold')::float8
         + current_setting('autovacuum_vacuum_scale_factor')::float8 * greatest(c.reltuples, 0)
         AS vacuum_due"""
_VACUUM_FROM = """
  FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
 ORDER BY s.n_dead_tup DESC, age(c.relfrozenxid) DESC, 1, 2 LIMIT %(limit)s
"""
VACUUM = {
    15: f"{_VACUUM_COLS}, NULL::float8 AS autovacuum_time {_VACUUM_FROM}",
    # 18 counts the time spent vacuuming each table
    18: f"{_VACUUM_COLS}, s.total_autovacuum_time / 1000 AS autovacuum_time {_VACUUM_FROM}",
}


def vacuum_stats(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "vacuum-stats",
        "Dead rows, vacuum and transaction-ID wraparound per table",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("live_rows", "rows", "int"),
            ("dead_rows", "dead rows", "int"),
            ("dead_pct", "dead", "pct"),
            ("last_vacuum_age", "last vacuum", "seconds"),
            ("last_analyze_age", "last analyze", "seconds"),
            ("xid_age", "xid age", "int"),
            ("wraparound_pct", "to forced vacuum", "pct"),
            ("autovacuum", "autovacuum"),
            ("vacuum_due", "vacuum due"),
            ("autovacuum_time", "autovacuum time", "seconds"),
        ),
        i.rows(by_major(VACUUM, i.major), {"limit": o.limit}),
        ["'to forced vacuum': xid age as a share of autovacuum_freeze_max_age"],
    )
