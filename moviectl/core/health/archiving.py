"""`health`'s ``archiving`` check: is WAL reaching the archive (``pg_stat_archiver``)?

Archiving off passes (point-in-time recovery is not set up: nothing to lose track of).
A warning, never a failure (the database serves either way): the last attempt failed
(PostgreSQL keeps the WAL and retries, the disk fills meanwhile), or more than
``LAG_SEGMENTS`` completed segments wait for the archiver (the recovery point falls
behind). The age of the last archived segment alone says nothing: an idle server
switches no segment. Readable by any role (no pg_monitor needed).
"""

from __future__ import annotations

from typing import Any

from moviectl.infra.errors import ExitCode

LAG_SEGMENTS = 8  # completed segments not archived yet (128 MiB at the default size)

_SQL = (
    "SELECT current_setting('archive_mode'), archived_count, last_archived_wal,"
    " extract(epoch FROM now() - last_archived_time)::float8, failed_count,"
    " last_failed_wal, last_failed_time,"
    " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),"
    " CASE WHEN pg_is_in_recovery() THEN NULL"
    "      ELSE pg_walfile_name(pg_current_wal_lsn()) END,"
    " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size')"
    " FROM pg_stat_archiver"
)


def waiting(current: str | None, last: str | None, seg_size: int = 16 << 20) -> int | None:
    """Completed segments after ``last`` archived, before ``current`` (being written);
    None when either is unknown (a history or backup file, a replica)."""
    if current is None or last is None or len(last) < 24 or not last[:24].isalnum():
        return None
    try:
        cur, done = int(current[8:24], 16), int(last[8:24], 16)
    except ValueError:
        return None
    per = 0x100000000 // seg_size  # segments per "log" (the name's middle 8 digits)
    n = (cur >> 32) * per + (cur & 0xFFFFFFFF) - ((done >> 32) * per + (done & 0xFFFFFFFF))
    return max(0, n - 1)


def check(read: Any) -> tuple[str, str, int, dict[str, Any]]:
    """``read``: runs a function on the check run's connection (``_Run.on_conn``)."""
    row = read(lambda c: c.execute(_SQL).fetchone())
    mode, archived, last, age, failed, last_failed, failed_at, failing, current, size = row
    data: dict[str, Any] = {
        "archive_mode": mode,
        "archived_count": int(archived),
        "last_archived_wal": last,
        "last_archived_age_seconds": round(age, 1) if age is not None else None,
        "failed_count": int(failed),
        "last_failed_wal": last_failed,
        "failing": bool(failing),
        "waiting_segments": waiting(current, last, int(size)),
    }
    if mode not in ("on", "always"):
        return "pass", "archiving off (point-in-time recovery not set up)", 0, data
    if failing:
        return (
            "warn",
            f"WAL archiving is failing: {failed} failure(s), the last for {last_failed} at "
            f"{failed_at:%Y-%m-%d %H:%M:%S%z}; PostgreSQL keeps the WAL and retries — see "
            "`moviectl pitr status` and the server log",
            int(ExitCode.FAILED),
            data,
        )
    lag = data["waiting_segments"]
    ago = f" {age:.0f}s ago" if age is not None else ""
    detail = f"archived {archived}, last {last or '-'}{ago}"
    if lag is not None and lag > LAG_SEGMENTS:
        return (
            "warn",
            f"archive lag: {lag} completed WAL segments not archived yet ({detail}); the "
            "recovery point falls behind",
            int(ExitCode.FAILED),
            data,
        )
    return "pass", detail + (f", {lag} waiting" if lag else ""), 0, data
