"""Lock and statement timeouts while migrating, retries, and who blocked us.

A migration's ``ALTER TABLE`` waits for its table lock behind every open transaction
that touched the table, and every query that arrives afterwards queues behind the
migration: one forgotten ``BEGIN`` in a psql session stalls the whole service. So
migrations run with ``lock_timeout`` (MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT, 5 s) and
``statement_timeout`` (MOVIE_MIGRATE_STATEMENT_TIMEOUT, 1 h); a run that times out on a
lock rolls its migration back (PostgreSQL's DDL is transactional) and is retried
MOVIE_MIGRATE_LOCK_RETRIES times with backoff. While it waits, a watcher on its own
connection reads ``pg_blocking_pids``, so the final error names the blocking pid, its
query and since when.

Two refinements, both found by breaking it:
- ``CREATE/DROP INDEX CONCURRENTLY`` (and ``REINDEX CONCURRENTLY``) run without the lock
  timeout: their waits block no reader or writer, and a build cut short leaves an
  INVALID index behind that makes every retry fail with "already exists".
- ``client_connection_check_interval`` (PostgreSQL 14+): a moviectl killed while its
  statement queues for a lock takes its backend with it within a second, instead of
  leaving it queued (every query of the table behind it) until the lock comes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import LockBusy, MoviectlError
from moviectl.infra.pgerrors import is_lock_timeout as is_lock_timeout  # drift.py's too
from moviectl.infra.pgerrors import is_statement_timeout
from moviectl.infra.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

BACKOFF_CAP = 8.0  # seconds
PG_MAX_MS = 2_147_483_647  # the largest lock_timeout / statement_timeout PostgreSQL accepts
CLIENT_CHECK_MS = 1000  # how soon a backend notices that its moviectl is gone
CONCURRENTLY = re.compile(r"^\s*(CREATE|DROP|REINDEX)\b[^;]*\bCONCURRENTLY\b", re.IGNORECASE)


@dataclass
class Blocker:
    pid: int
    application_name: str
    state: str
    query: str
    since: datetime | None  # when its transaction began (what holds the lock)

    def describe(self) -> str:
        when = f", in a transaction since {self.since:%Y-%m-%d %H:%M:%S %Z}" if self.since else ""
        app = self.application_name or "no application_name"
        return f"pid {self.pid} ({app}, {self.state}{when}): {one_line(self.query) or '<no query>'}"


def one_line(sql: str, limit: int = 120) -> str:
    """A statement on one line, cut to ``limit`` characters for an error message."""
    text = " ".join(sql.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def who(blockers: list[Blocker]) -> str:
    return "; ".join(b.describe() for b in blockers) or "a session that was gone when we looked"


def apply_timeouts(conn: Connection, settings: Settings) -> None:
    """Session-level lock_timeout and statement_timeout for the migrating connection."""
    from sqlalchemy import event

    lock_ms = to_ms(settings.migrate_statement_lock_timeout)
    stmt_ms = to_ms(settings.migrate_statement_timeout)
    conn.exec_driver_sql(f"SET lock_timeout = {lock_ms}")  # ints from validated settings
    conn.exec_driver_sql(f"SET statement_timeout = {stmt_ms}")
    conn.commit()
    if (conn.dialect.server_version_info or (0,)) >= (14,):
        try:  # a platform without the kernel support refuses any value but 0
            conn.exec_driver_sql(f"SET client_connection_check_interval = {CLIENT_CHECK_MS}")
            conn.commit()
        except Exception:
            conn.rollback()

    def before(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if CONCURRENTLY.match(statement):
            cursor.execute("SET lock_timeout = 0")

    def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if CONCURRENTLY.match(statement):
            cursor.execute(f"SET lock_timeout = {lock_ms}")

    def failed(ctx: Any) -> None:
        cursor = getattr(ctx, "cursor", None)  # unset when connecting failed
        if cursor is not None and CONCURRENTLY.match(getattr(ctx, "statement", None) or ""):
            # outside a transaction (where CONCURRENTLY runs) the cursor still works;
            # inside one, the rollback restores the setting anyway
            with suppress(Exception):
                cursor.execute(f"SET lock_timeout = {lock_ms}")

    event.listen(conn, "before_cursor_execute", before)
    event.listen(conn, "after_cursor_execute", after)
    event.listen(conn.engine, "handle_error", failed)


def to_ms(seconds: float) -> int:
    """Seconds as PostgreSQL's milliseconds: 0 stays "no limit", anything else at least 1 ms
    and at most what the server accepts (``inf`` included)."""
    if seconds <= 0:
        return 0
    if seconds * 1000 >= PG_MAX_MS:
        return PG_MAX_MS
    return max(1, round(seconds * 1000))


class BlockerWatch:
    """Polls, from its own connection, who blocks the migrating backend ``pid``."""

    def __init__(self, target: DbTarget, pid: int, connect_timeout: int, interval: float = 0.1):
        self.target, self.pid, self.interval = target, pid, interval
        self.connect_timeout = connect_timeout
        self.last: list[Blocker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moviectl-blockers", daemon=True)

    def __enter__(self) -> BlockerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from moviectl.infra.engine import connect

        try:
            conn = connect(
                self.target,
                connect_timeout=self.connect_timeout,
                application_name="moviectl migrate (lock watch)",
            )
        except Exception:  # the watch is a courtesy; the migration goes on
            return
        try:
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT pid, coalesce(application_name, ''), coalesce(state, ''), "
                    "coalesce(query, ''), xact_start FROM pg_stat_activity "
                    "WHERE pid = ANY(pg_blocking_pids(%s))",
                    (self.pid,),
                ).fetchall()
                if rows:
                    self.last = [Blocker(*r) for r in rows]
                self._stop.wait(self.interval)
        except Exception:  # the server went away: the migration will say so
            pass
        finally:
            conn.close()


@contextmanager
def watching(conn: Connection, target: DbTarget, settings: Settings) -> Iterator[BlockerWatch]:
    pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    conn.commit()
    with BlockerWatch(target, pid, settings.connect_timeout) as watch:
        yield watch


def run_with_lock_retries(
    conn: Connection,
    target: DbTarget,
    settings: Settings,
    run: Callable[[], None],
    on_retry: Callable[[], None] = lambda: None,
    sleep: Callable[[float], Any] = time.sleep,
) -> None:
    """``run()`` (one migration transaction); after a lock timeout, roll back and retry."""
    retries = settings.migrate_lock_retries
    with watching(conn, target, settings) as watch:
        for attempt in range(retries + 1):
            try:
                run()
                return
            except Exception as exc:
                if is_statement_timeout(exc):
                    conn.rollback()
                    raise statement_timeout_error(target, settings, exc) from None
                if not is_lock_timeout(exc):
                    raise
                conn.rollback()
                if attempt == retries:
                    raise lock_timeout_error(target, settings, watch.last, attempt + 1) from None
                on_retry()
                sleep(min(BACKOFF_CAP, 0.5 * 2**attempt))


def stall_lock_busy(
    conn: Any,
    what: str,
    target: DbTarget,
    settings: Settings,
    modes: list[str],
    left: str,
    again: str,
) -> LockBusy:
    """``what`` (a backup, a seed) gave up after MOVIE_STALL_TIMEOUT on a table lock: who holds
    one of ``modes`` (asked on ``conn``), what was ``left``, and how to run it ``again``."""
    blockers = table_lock_holders(conn, modes)
    return LockBusy(
        f"{what} of {target.where} gave up: a table lock was not granted within "
        f"{settings.stall_timeout:g} s (MOVIE_STALL_TIMEOUT); {left}; "
        f"blocked by {who(blockers)}",
        hint=f"end that transaction (or SELECT pg_terminate_backend(<pid>)), then {again}; "
        "a larger MOVIE_STALL_TIMEOUT waits longer",
        holders=[b.pid for b in blockers],
    )


def lock_timeout_error(
    target: DbTarget, settings: Settings, blockers: list[Blocker], tries: int
) -> LockBusy:
    return LockBusy(
        f"migration on {target.where} gave up after {tries} {'try' if tries == 1 else 'tries'}: "
        f"a table lock was not granted within {settings.migrate_statement_lock_timeout:g} s "
        f"(that step was rolled back); blocked by {who(blockers)}",
        hint="end that transaction (or SELECT pg_terminate_backend(<pid>)), then migrate "
        "again; MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT / MOVIE_MIGRATE_LOCK_RETRIES wait longer",
        holders=[b.pid for b in blockers],
    )


def statement_timeout_error(
    target: DbTarget, settings: Settings, exc: BaseException
) -> MoviectlError:
    statement = one_line(str(getattr(exc, "statement", "") or ""))
    left = (
        " A CONCURRENTLY build cut short leaves an INVALID index: drop it "
        "(DROP INDEX CONCURRENTLY <name>) before migrating again."
        if CONCURRENTLY.match(statement)
        else ""
    )
    return MoviectlError(
        f"migration on {target.where} stopped: `{statement or 'a statement'}` ran longer than "
        f"MOVIE_MIGRATE_STATEMENT_TIMEOUT ({settings.migrate_statement_timeout:g} s) and was "
        "cancelled; its migration was rolled back." + left,
        hint="raise MOVIE_MIGRATE_STATEMENT_TIMEOUT (0: no limit) for a long build or "
        "backfill, or split it into batches; `moviectl migrate status` shows where it stopped",
        statement=statement,
    )


# sessions other than ours holding a table lock of one of %(modes)s in our database
HOLDERS_SQL = (
    "SELECT DISTINCT a.pid, coalesce(a.application_name, ''), coalesce(a.state, ''), "
    "coalesce(a.query, ''), a.xact_start FROM pg_locks l "
    "JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'relation' AND l.granted AND l.mode = ANY(%(modes)s) "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND a.pid <> pg_backend_pid()"
)


def table_lock_holders(conn: Any, modes: list[str]) -> list[Blocker]:
    """Who holds a table lock of ``modes`` in ``conn``'s database (a psycopg connection
    outside a failed transaction); best effort: nobody, if the question fails."""
    try:
        return [Blocker(*r) for r in conn.execute(HOLDERS_SQL, {"modes": modes}).fetchall()]
    except Exception:  # the server went away: the caller's error says so
        return []


def table_lock_error(conn: Connection, target: DbTarget, settings: Settings) -> LockBusy:
    """`migrate check` gave up on a table lock: who holds ACCESS EXCLUSIVE in this database."""
    rows = conn.exec_driver_sql(HOLDERS_SQL, {"modes": ["AccessExclusiveLock"]}).all()
    conn.rollback()
    holders = [Blocker(*r) for r in rows]
    return LockBusy(
        f"migrate check on {target.where} waited {settings.migrate_lock_timeout:g} s for a "
        f"table lock and gave up: held by {who(holders)}",
        hint="a migration running? check again once it is done; "
        "if that transaction is stuck: SELECT pg_terminate_backend(<pid>)",
        holders=[b.pid for b in holders],
    )
