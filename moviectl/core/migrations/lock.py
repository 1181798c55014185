"""The migration lock: one PostgreSQL advisory lock per database, on a session of its own.

A session lock through a transaction pooler would stay on whichever backend took it, so
the lock refuses a pooled connection (``infra/pooler.py``): migrations run on the direct
URL (MOVIE_DATABASE_DIRECT_URL). The wait is always bounded (``lock_timeout``), and the
lock goes with the session, so a killed migration leaves none behind.

``alembic/env.py`` takes it for every online run, so a plain ``alembic upgrade head``
by hand and ``moviectl migrate`` exclude each other. A waiter queues on the server and
gives up after MOVIE_MIGRATE_LOCK_TIMEOUT seconds (0: at once), naming the holder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import LockBusy
from moviectl.infra.pooler import session_refused, through_pooler

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

MIGRATION_LOCK_KEY = 0x6D6F7669  # "movi": one key per database, shared with `alembic` by hand


@dataclass
class LockHolder:
    pid: int
    application_name: str
    user: str
    since: datetime | None
    client: str | None


def lock_holders(conn: Connection, key: int = MIGRATION_LOCK_KEY) -> list[LockHolder]:
    from sqlalchemy import text

    rows = conn.execute(
        text(
            """
            SELECT a.pid, a.application_name, a.usename, a.backend_start,
                   host(a.client_addr) AS client
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = (CAST(:key AS bigint) >> 32)::oid
              AND l.objid = (CAST(:key AS bigint) & 4294967295)::oid AND l.objsubid = 1
              AND a.pid <> pg_backend_pid()
            """
        ),
        {"key": key},
    ).all()
    return [
        LockHolder(r.pid, r.application_name or "", r.usename, r.backend_start, r.client)
        for r in rows
    ]


@contextmanager
def migration_lock(
    conn: Connection, timeout: float, target: DbTarget, key: int = MIGRATION_LOCK_KEY
) -> Iterator[None]:
    """Hold the session-level migration lock; wait at most ``timeout`` seconds for it
    (0: take it only if it is free)."""
    from sqlalchemy import text

    if through_pooler(conn.connection.dbapi_connection):  # `alembic upgrade` by hand, too
        raise session_refused(target, "the migration lock", "MOVIE_DATABASE_URL")
    if not _take(conn, timeout, key):
        holders = lock_holders(conn, key)
        conn.commit()
        raise busy(target, holders)
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()


def _take(conn: Connection, timeout: float, key: int) -> bool:
    """Take the lock; False when another session still held it after ``timeout`` seconds.

    The server does the waiting: a blocking ``pg_advisory_lock`` under ``lock_timeout``
    (which bounds advisory locks too) is granted the moment the holder lets go, with no
    polling. ``lock_timeout = 0`` would mean "forever" to PostgreSQL, so a timeout of 0
    asks ``pg_try_advisory_lock`` once instead, as before.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from moviectl.core.migrations.timeouts import is_lock_timeout, to_ms

    if timeout <= 0:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        return got
    try:
        # SET LOCAL: gone with this transaction, before the migration sets its own timeouts;
        # no statement_timeout (the session's may be shorter): lock_timeout bounds the wait
        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {to_ms(timeout)}")
        conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        conn.commit()  # a session-level lock: it outlives the transaction
    except DBAPIError as exc:
        conn.rollback()
        if is_lock_timeout(exc):  # SQLSTATE 55P03
            return False
        raise
    return True


def busy(target: DbTarget, holders: list[LockHolder]) -> LockBusy:
    """The error of a migration that gave up waiting: who holds the lock."""
    who = (
        ", ".join(
            f"pid {h.pid} ({h.application_name or 'no application_name'}, user {h.user}"
            + (f", since {h.since:%Y-%m-%d %H:%M:%S %Z}" if h.since else "")
            + ")"
            for h in holders
        )
        or "another session"
    )
    return LockBusy(
        f"another migration holds the migration lock on {target.where}: {who}",
        hint="wait for it to finish, or raise MOVIE_MIGRATE_LOCK_TIMEOUT; "
        "if it is stuck: SELECT pg_terminate_backend(<pid>)",
        holders=[h.pid for h in holders],
    )
