"""`inspect diagnose` (Heroku's ``pg:diagnose``): every check against a threshold, each
finding green, yellow or red with the fix.

The checks read the same statistics views as the subcommands, on the same bounded
connection; a check the role may not fully see says so instead of passing quietly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from moviectl.core.inspect.session import Inspector

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

Status = Literal["green", "yellow", "red"]
RANK: dict[Status, int] = {"green": 0, "yellow": 1, "red": 2}
XID_LIMIT = 2**31  # a table this old in transaction ids stops the server


@dataclass(frozen=True)
class Thresholds:
    blocking_seconds: float = 30.0  # a lock wait this long: red
    idle_tx_seconds: float = 60.0  # idle in transaction this long: yellow
    long_query_seconds: float = 300.0  # an active query this long: yellow
    wraparound_pct: float = 50.0  # xid age, as a share of 2^31: red
    unused_index_bytes: int = 1024 * 1024  # a never-scanned index this big: yellow
    cache_hit_pct: float = 99.0  # a hit rate under this (with enough reads): yellow
    dead_pct: float = 20.0  # dead rows, as a share of a table (1,000 rows at least): yellow
    slot_wal_bytes: int = 1024**3  # an inactive slot holding this much WAL: red
    connections_pct: float = 80.0  # of max_connections in use: yellow (95 %: red)


@dataclass
class Finding:
    check: str
    status: Status
    summary: str
    fix: str | None = None
    items: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class DiagnoseReport:
    server_major: int
    status: Status
    findings: list[Finding]
    thresholds: Thresholds


def _ok(check: str, summary: str) -> Finding:
    return Finding(check, "green", summary)


def check_blocking(i: Inspector, t: Thresholds) -> Finding:
    rows = i.rows(
        "SELECT w.pid AS blocked_pid, b AS blocking_pid,"
        " extract(epoch FROM now() - w.query_start)::float8 AS waiting"
        " FROM pg_stat_activity w CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS b"
        " WHERE w.wait_event_type = 'Lock' ORDER BY waiting DESC"
    )
    long = [r for r in rows if (r["waiting"] or 0) >= t.blocking_seconds]
    if not long:
        return _ok("blocking", f"no lock wait of {t.blocking_seconds:g} s or more")
    blockers = sorted({r["blocking_pid"] for r in long})
    return Finding(
        "blocking",
        "red",
        f"{len({r['blocked_pid'] for r in long})} session(s) waiting {long[0]['waiting']:.0f} s"
        f" or less for a lock held by pid {', '.join(map(str, blockers))}",
        f"see `moviectl inspect blocking`; end the blocker with `moviectl inspect kill "
        f"{blockers[0]}` (--terminate if it is idle in a transaction)",
        long,
    )


SESSIONS = """
SELECT pid, state, application_name AS application,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start
                                       ELSE state_change END)::float8 AS seconds
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' AND state = %(state)s
   AND now() - CASE WHEN state = 'active' THEN query_start ELSE state_change END
       >= make_interval(secs => %(min)s)
 ORDER BY seconds DESC
"""


def check_idle_transactions(i: Inspector, t: Thresholds) -> Finding:
    rows = i.rows(SESSIONS, {"state": "idle in transaction", "min": t.idle_tx_seconds})
    if not rows:
        return _ok("idle-in-transaction", f"no transaction idle {t.idle_tx_seconds:g} s or more")
    pids = ", ".join(str(r["pid"]) for r in rows)
    return Finding(
        "idle-in-transaction",
        "yellow",
        f"{len(rows)} session(s) idle in a transaction for up to {rows[0]['seconds']:.0f} s"
        f" (pid {pids}): they hold their locks and hold back VACUUM",
        f"fix the client that leaves them open; `moviectl inspect kill {rows[0]['pid']} "
        "--terminate` ends one; idle_in_transaction_session_timeout ends them all",
        rows,
    )


def check_long_queries(i: Inspector, t: Thresholds) -> Finding:
    rows = i.rows(SESSIONS, {"state": "active", "min": t.long_query_seconds})
    if not rows:
        return _ok("long-queries", f"no query running {t.long_query_seconds:g} s or more")
    return Finding(
        "long-queries",
        "yellow",
        f"{len(rows)} quer(y/ies) running for up to {rows[0]['seconds']:.0f} s",
        "see `moviectl inspect long-running`; cancel one with `moviectl inspect kill PID`",
        rows,
    )


def check_wraparound(i: Inspector, t: Thresholds) -> Finding:
    rows = i.rows(
        "SELECT c.oid::regclass::text AS table, age(c.relfrozenxid) AS xid_age,"
        " age(c.relfrozenxid)::float8 * 100 / %(limit)s AS pct,"
        " age(c.relfrozenxid) > current_setting('autovacuum_freeze_max_age')::int AS overdue"
        " FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND c.relfrozenxid <> '0'"
        " ORDER BY age(c.relfrozenxid) DESC LIMIT 5",
        {"limit": XID_LIMIT},
    )
    worst: dict[str, Any] = (
        rows[0] if rows else {"table": "-", "xid_age": 0, "pct": 0.0, "overdue": False}
    )
    fix = f"VACUUM (FREEZE, VERBOSE) {worst['table']}; and see why autovacuum did not"
    if worst["pct"] >= t.wraparound_pct:
        return Finding(
            "wraparound",
            "red",
            f"{worst['table']} is {worst['pct']:.0f} % of the way to transaction-ID "
            "wraparound (the server stops writing at 100 %)",
            fix,
            [r for r in rows if r["pct"] >= t.wraparound_pct],
        )
    if worst["overdue"]:
        return Finding(
            "wraparound",
            "yellow",
            f"{worst['table']} is past autovacuum_freeze_max_age ({worst['xid_age']:,} "
            "transactions): autovacuum has not frozen it yet",
            fix,
            [r for r in rows if r["overdue"]],
        )
    return _ok("wraparound", f"oldest table {worst['pct']:.1f} % of the way to wraparound")


def check_unused_indexes(i: Inspector, t: Thresholds) -> Finding:
    from moviectl.core.inspect.session import safe_size

    rows = i.rows(
        f"SELECT s.indexrelid::regclass::text AS index, s.relname AS table,"
        f" {safe_size('s.indexrelid')} AS size"
        " FROM pg_stat_user_indexes s JOIN pg_index x ON x.indexrelid = s.indexrelid"
        " WHERE s.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary"
        f" AND {safe_size('s.indexrelid')} >= %(min)s ORDER BY 3 DESC",
        {"min": t.unused_index_bytes},
    )
    if not rows:
        return _ok("unused-indexes", f"no never-used index of {t.unused_index_bytes:,} B or more")
    return Finding(
        "unused-indexes",
        "yellow",
        f"{len(rows)} index(es) never scanned since the statistics reset, the largest "
        f"{rows[0]['index']} ({rows[0]['size']:,} B)",
        f"if no replica reads it either: DROP INDEX CONCURRENTLY {rows[0]['index']}; "
        "(in a migration)",
        rows,
    )


def check_cache_hit(i: Inspector, t: Thresholds) -> Finding:
    row = i.rows(
        "SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()"
    )[0]
    total = (row["blks_hit"] or 0) + (row["blks_read"] or 0)
    if total < 10_000:  # a new or idle database: too few reads to say
        return _ok("cache-hit", f"only {total:,} block reads counted: too few to judge")
    pct = row["blks_hit"] * 100 / total
    if pct >= t.cache_hit_pct:
        return _ok("cache-hit", f"cache hit rate {pct:.2f} %")
    return Finding(
        "cache-hit",
        "yellow",
        f"cache hit rate {pct:.2f} %, under {t.cache_hit_pct:g} %",
        "raise shared_buffers (about a quarter of RAM) or find the big scans with "
        "`moviectl inspect seq-scans` and `inspect outliers`",
        [{"hit_pct": pct, "reads": total}],
    )


def check_dead_rows(i: Inspector, t: Thresholds) -> Finding:
    rows = i.rows(
        "SELECT s.relid::regclass::text AS table, s.n_dead_tup AS dead_rows,"
        " s.n_dead_tup::float8 * 100 / nullif(s.n_live_tup + s.n_dead_tup, 0) AS dead_pct,"
        " coalesce((SELECT option_value FROM pg_options_to_table(c.reloptions)"
        "  WHERE option_name = 'autovacuum_enabled'), 'on') = 'false' AS autovacuum_off"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        " WHERE s.n_dead_tup >= 1000"
        " AND s.n_dead_tup::float8 * 100 / nullif(s.n_live_tup + s.n_dead_tup, 0) >= %(pct)s"
        " ORDER BY s.n_dead_tup DESC",
        {"pct": t.dead_pct},
    )
    if not rows:
        return _ok("dead-rows", f"no table with {t.dead_pct:g} % dead rows or more")
    worst = rows[0]
    fix = f"VACUUM (ANALYZE) {worst['table']};"
    if worst["autovacuum_off"]:
        fix += (
            f" autovacuum is off for it: ALTER TABLE {worst['table']} RESET (autovacuum_enabled);"
        )
    return Finding(
        "dead-rows",
        "yellow",
        f"{len(rows)} table(s) with {t.dead_pct:g} % dead rows or more, the most in "
        f"{worst['table']} ({worst['dead_rows']:,}, {worst['dead_pct']:.0f} %)",
        fix,
        rows,
    )


def check_slots(i: Inspector, t: Thresholds) -> Finding:
    from moviectl.core.inspect.activity import CURRENT_LSN

    rows = i.rows(
        f"SELECT slot_name AS slot, active, pg_wal_lsn_diff({CURRENT_LSN},"
        " coalesce(restart_lsn, confirmed_flush_lsn))::bigint AS retained"
        " FROM pg_replication_slots WHERE NOT active ORDER BY retained DESC NULLS LAST"
    )
    if not rows:
        return _ok("replication-slots", "no inactive replication slot")
    big = [r for r in rows if (r["retained"] or 0) >= t.slot_wal_bytes]
    slot = rows[0]["slot"]
    return Finding(
        "replication-slots",
        "red" if big else "yellow",
        f"{len(rows)} inactive replication slot(s) holding WAL, {slot} up to "
        f"{rows[0]['retained'] or 0:,} B: the disk fills until its consumer returns",
        f"if its consumer is gone for good: SELECT pg_drop_replication_slot('{slot}');",
        rows,
    )


def check_connections(i: Inspector, t: Thresholds) -> Finding:
    from moviectl.core.inspect.activity import CLIENT

    used, most = i.conn.execute(
        f"SELECT (SELECT count(*) FROM pg_stat_activity WHERE {CLIENT}),"
        " current_setting('max_connections')::int"
    ).fetchone() or (0, 1)
    pct = used * 100 / most
    summary = f"{used} of max_connections {most} in use ({pct:.0f} %)"
    if pct < t.connections_pct:
        return _ok("connections", summary)
    return Finding(
        "connections",
        "red" if pct >= 95 else "yellow",
        summary,
        "put a pooler (pgbouncer) in front, or lower the app's pool size; "
        "`moviectl inspect connections` shows who holds them",
    )


CHECKS = (
    check_blocking,
    check_idle_transactions,
    check_long_queries,
    check_wraparound,
    check_dead_rows,
    check_unused_indexes,
    check_cache_hit,
    check_slots,
    check_connections,
)


def diagnose(settings: Settings, thresholds: Thresholds | None = None) -> DiagnoseReport:
    """Run every check; the report's status is the worst finding's."""
    from moviectl.core.inspect.session import inspecting

    t = thresholds or Thresholds()
    with inspecting(settings) as i:
        findings = [check(i, t) for check in CHECKS]
        if not i.reads_all_stats:
            findings.append(
                Finding(
                    "visibility",
                    "yellow",
                    f"{i.role} sees other roles' sessions without their queries or state",
                    f"{i.grant_hint};",
                )
            )
        worst: Status = max((f.status for f in findings), key=RANK.__getitem__)
        return DiagnoseReport(i.major, worst, findings, t)
