"""How the tables and indexes are used: cache hits, index use, unused and duplicate indexes,
sequential scans (from the cumulative statistics views, which take no locks)."""

from __future__ import annotations

from moviectl.core.inspect.model import InspectResult, Options, by_major, cols
from moviectl.core.inspect.session import Inspector, safe_size

CACHE_HIT = """
SELECT 'tables' AS name,
       sum(heap_blks_hit)::float8 * 100 / nullif(sum(heap_blks_hit + heap_blks_read), 0) AS ratio,
       sum(heap_blks_hit)::bigint AS hits, sum(heap_blks_read)::bigint AS reads
  FROM pg_statio_user_tables
UNION ALL
SELECT 'indexes',
       sum(idx_blks_hit)::float8 * 100 / nullif(sum(idx_blks_hit + idx_blks_read), 0),
       sum(idx_blks_hit)::bigint, sum(idx_blks_read)::bigint
  FROM pg_statio_user_indexes
UNION ALL
SELECT 'database ' || datname,
       blks_hit::float8 * 100 / nullif(blks_hit + blks_read, 0), blks_hit, blks_read
  FROM pg_stat_database WHERE datname = current_database()
"""


def cache_hit(i: Inspector, o: Options) -> InspectResult:
    rows = i.rows(CACHE_HIT)
    notes = ["a rate under 99 % on a busy database usually means shared_buffers is too small"]
    if all(r["ratio"] is None for r in rows):
        notes.append("no reads counted yet (statistics start at the last reset)")
    return InspectResult(
        "cache-hit",
        "Buffer cache hit rate",
        i.major,
        cols(
            ("name", "of"),
            ("ratio", "hit rate", "pct"),
            ("hits", "hits", "int"),
            ("reads", "reads", "int"),
        ),
        rows,
        notes,
    )


INDEX_USAGE = """
SELECT schemaname AS schema, relname AS table,
       CASE WHEN seq_scan + coalesce(idx_scan, 0) = 0 THEN NULL
            ELSE coalesce(idx_scan, 0)::float8 * 100 / (seq_scan + coalesce(idx_scan, 0)) END
         AS index_use,
       seq_scan, coalesce(idx_scan, 0) AS idx_scan, n_live_tup AS live_rows
  FROM pg_stat_user_tables
 ORDER BY n_live_tup DESC, schemaname, relname
 LIMIT %(limit)s
"""


def index_usage(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "index-usage",
        "How often each table is read through an index",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("index_use", "index use", "pct"),
            ("seq_scan", "seq scans", "int"),
            ("idx_scan", "index scans", "int"),
            ("live_rows", "rows", "int"),
        ),
        i.rows(INDEX_USAGE, {"limit": o.limit}),
    )


# unique and primary-key indexes are left out: they enforce a constraint even unread
_UNUSED_FROM = f"""
  FROM pg_stat_user_indexes s JOIN pg_index x ON x.indexrelid = s.indexrelid
 WHERE s.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary
 ORDER BY {safe_size("s.indexrelid")} DESC, s.schemaname, s.indexrelname
 LIMIT %(limit)s
"""
UNUSED = {
    15: f"""SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       {safe_size("s.indexrelid")} AS size, s.idx_scan AS scans, NULL::float8 AS last_scan_age
       {_UNUSED_FROM}""",
    # 16 records when an index was last scanned
    16: f"""SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
       {safe_size("s.indexrelid")} AS size, s.idx_scan AS scans,
       extract(epoch FROM now() - s.last_idx_scan)::float8 AS last_scan_age
       {_UNUSED_FROM}""",
}
STATS_SINCE = "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()"


def unused_indexes(i: Inspector, o: Options) -> InspectResult:
    since = i.value(STATS_SINCE)
    return InspectResult(
        "unused-indexes",
        "Indexes never scanned (unique and primary keys left out)",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("index", "index"),
            ("size", "size", "bytes"),
            ("scans", "scans", "int"),
            ("last_scan_age", "last scan", "seconds"),
        ),
        i.rows(by_major(UNUSED, i.major), {"limit": o.limit}),
        [
            "counted since the statistics were last reset"
            + (f" ({since:%Y-%m-%d %H:%M})" if since else " (never: since the cluster began)")
            + " and on this server only: check replicas before dropping",
            "drop one with `DROP INDEX CONCURRENTLY schema.index` in a migration",
        ],
    )


# grouped on the catalog's columns first; only the indexes in a group of two or more are
# then statted and described (every index's size and definition was read before)
DUPLICATES = f"""
WITH groups AS (
  SELECT x.indrelid, array_agg(x.indexrelid ORDER BY c.relname) AS members
    FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
     AND n.nspname NOT LIKE 'pg_toast%%'
   GROUP BY x.indrelid, x.indkey::text, x.indclass::text, x.indcollation::text,
            coalesce(pg_get_expr(x.indexprs, x.indrelid), ''),
            coalesce(pg_get_expr(x.indpred, x.indrelid), ''), c.relam
  HAVING count(*) > 1
)
SELECT g.indrelid::regclass::text AS table,
       (SELECT string_agg(m::regclass::text, ', ' ORDER BY k)
          FROM unnest(g.members) WITH ORDINALITY u(m, k)) AS indexes,
       (SELECT sum({safe_size("m")})::bigint FROM unnest(g.members) u(m)) AS size,
       (SELECT min(pg_get_indexdef(m)) FROM unnest(g.members) u(m)) AS definition
  FROM groups g ORDER BY size DESC LIMIT %(limit)s
"""


def duplicate_indexes(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "duplicate-indexes",
        "Indexes with the same columns, operator classes, expression and predicate",
        i.major,
        cols(
            ("table", "table"),
            ("indexes", "indexes"),
            ("size", "size together", "bytes"),
            ("definition", "definition", "sql"),
        ),
        i.rows(DUPLICATES, {"limit": o.limit}),
        ["keep one of each group (the one a constraint uses) and drop the others"],
    )


_SEQ_FROM = """
  FROM pg_stat_user_tables
 ORDER BY seq_scan DESC, seq_tup_read DESC, schemaname, relname
 LIMIT %(limit)s
"""
SEQ_SCANS = {
    15: f"""SELECT schemaname AS schema, relname AS table, seq_scan, seq_tup_read AS rows_read,
       coalesce(idx_scan, 0) AS idx_scan, n_live_tup AS live_rows,
       NULL::float8 AS last_seq_scan_age {_SEQ_FROM}""",
    16: f"""SELECT schemaname AS schema, relname AS table, seq_scan, seq_tup_read AS rows_read,
       coalesce(idx_scan, 0) AS idx_scan, n_live_tup AS live_rows,
       extract(epoch FROM now() - last_seq_scan)::float8 AS last_seq_scan_age {_SEQ_FROM}""",
}


def seq_scans(i: Inspector, o: Options) -> InspectResult:
    return InspectResult(
        "seq-scans",
        "Sequential scans per table",
        i.major,
        cols(
            ("schema", "schema"),
            ("table", "table"),
            ("seq_scan", "seq scans", "int"),
            ("rows_read", "rows read", "int"),
            ("idx_scan", "index scans", "int"),
            ("live_rows", "rows", "int"),
            ("last_seq_scan_age", "last seq scan", "seconds"),
        ),
        i.rows(by_major(SEQ_SCANS, i.major), {"limit": o.limit}),
        ["many sequential scans reading many rows on a large table: a missing index"],
    )
