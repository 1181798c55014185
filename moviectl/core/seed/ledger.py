"""The seed ledger (``seed_runs``) and the locks that keep "never twice" true.

- One seed set at a time: a run holds the advisory lock ``(SEED_SET_LOCK, hashtext(key))``
  from its ledger check to its end, so a second run of the same set waits, then finds it
  done. Different sets run side by side.
- A live run holds ``(SEED_RUN_LOCK, run id)`` on the same session. A ``running`` row whose
  lock nobody holds belongs to a process that was killed or a server that restarted:
  ``abandon_dead_runs`` marks it ``failed``. Both locks vanish with the session, so a
  kill -9 never leaves one behind.
"""

from __future__ import annotations

import contextlib
from typing import Any

from moviectl.infra.admin import advisory_lock
from moviectl.infra.errors import LockBusy

SEED_SET_LOCK = 0x6D6F7673  # "movs"
SEED_RUN_LOCK = 0x6D6F7672  # "movr"
ABANDONED = "abandoned: the run ended without finishing (process killed or server restarted)"

# marks a ledger row done, inside the data's own transaction (psycopg named parameters)
FINISH_RUN = (
    "UPDATE seed_runs SET status = 'done', rows_inserted = %(n)s, "
    "finished_at = clock_timestamp() WHERE id = %(id)s"
)


def hold_seed_set(conn: Any, key: str, wait_seconds: float) -> None:
    """Take the seed set's lock on ``conn`` (autocommit), waiting at most ``wait_seconds``."""
    if not advisory_lock(conn, SEED_SET_LOCK, key, wait_seconds):
        raise LockBusy(
            f"another seed of the same set ({key}) is still running after {wait_seconds:g}s",
            hint="wait for it to finish; `SELECT * FROM seed_runs WHERE status = 'running'`",
        )


def abandon_dead_runs(conn: Any) -> int:
    """Mark ``running`` rows that no live session owns as ``failed``; how many there were."""
    cur = conn.execute(
        """
        UPDATE seed_runs SET status = 'failed', error = %(why)s,
               finished_at = clock_timestamp()
        WHERE status = 'running' AND NOT EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = %(ns)s::oid AND l.objid = seed_runs.id::oid)
        """,
        {"why": ABANDONED, "ns": SEED_RUN_LOCK},
    )
    return int(cur.rowcount or 0)


def last_done(conn: Any, key: str) -> tuple[int, Any, Any] | None:
    """(id, started_at, finished_at) of the newest finished run of ``key``, if any."""
    row = conn.execute(
        "SELECT id, started_at, finished_at FROM seed_runs WHERE key = %s AND status = 'done' "
        "ORDER BY id DESC LIMIT 1",
        (key,),
    ).fetchone()
    return (row[0], row[1], row[2]) if row else None


def start_run(conn: Any, **fields: Any) -> int:
    """Insert a ``running`` row and take its run lock in one transaction; its id."""
    with conn.transaction():
        run_id = int(
            conn.execute(
                "INSERT INTO seed_runs (key, source, file_name, sha256, requested, random_seed, "
                "method, status) VALUES (%(key)s, %(source)s, %(file_name)s, %(sha256)s, "
                "%(requested)s, %(random_seed)s, %(method)s, 'running') RETURNING id",
                fields,
            ).fetchone()[0]
        )
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (SEED_RUN_LOCK, run_id))
    return run_id


def run_times(conn: Any, run_id: int) -> tuple[Any, Any]:
    row = conn.execute(
        "SELECT started_at, finished_at FROM seed_runs WHERE id = %s", (run_id,)
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def mark_failed(conn: Any, run_id: int, exc: BaseException) -> None:
    """Record why a run failed (best effort: the server may be gone)."""
    text = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
    with contextlib.suppress(Exception):  # the server may be gone: then the next seed
        conn.execute(  # finds the row abandoned and marks it failed
            "UPDATE seed_runs SET status = 'failed', error = %s, "
            "finished_at = clock_timestamp() WHERE id = %s",
            (text, run_id),
        )
