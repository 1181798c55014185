"""Lock and statement timeouts while migrating, retries, and who blocked us.

A migration's ``ALTER TABLE`` waits for its table lock behind every open transaction
that touched the table, and every query that arrives afterwards queues behind the
migration: one forgotten ``BEGIN`` in a psql session stalls the whole service. So
migrations run with ``lock_timeout`` (MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT, 5 s) and
``statement_timeout`` (MOVIE_MIGRATE_STATEMENT_TIMEOUT, 1 h); a run that times out on a
lock is rolled back (PostgreSQL's DDL is transactional: nothing was applied) and retried
MOVIE_MIGRATE_LOCK_RETRIES times with backoff. While it waits, a watcher on its own
connection reads ``pg_blocking_pids``, so the final error names the blocking pid, its
query and since when.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import LockBusy
from moviectl.infra.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
BACKOFF_CAP = 8.0  # seconds


@dataclass
class Blocker:
    pid: int
    application_name: str
    state: str
    query: str
    since: datetime | None  # when its transaction began (what holds the lock)

    def describe(self) -> str:
        when = f", in a transaction since {self.since:%Y-%m-%d %H:%M:%S %Z}" if self.since else ""
        query = " ".join(self.query.split())
        if len(query) > 120:
            query = query[:117] + "..."
        app = self.application_name or "no application_name"
        return f"pid {self.pid} ({app}, {self.state}{when}): {query or '<no query>'}"


def apply_timeouts(conn: Connection, settings: Settings) -> None:
    """Session-level lock_timeout and statement_timeout for the migrating connection."""
    lock_ms = int(settings.migrate_statement_lock_timeout * 1000)
    stmt_ms = int(settings.migrate_statement_timeout * 1000)
    conn.exec_driver_sql(f"SET lock_timeout = {lock_ms}")  # ints from validated settings
    conn.exec_driver_sql(f"SET statement_timeout = {stmt_ms}")
    conn.commit()


def is_lock_timeout(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE


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
                if not is_lock_timeout(exc):
                    raise
                conn.rollback()
                if attempt == retries:
                    raise lock_timeout_error(target, settings, watch.last, attempt + 1) from None
                on_retry()
                sleep(min(BACKOFF_CAP, 0.5 * 2**attempt))


def lock_timeout_error(
    target: DbTarget, settings: Settings, blockers: list[Blocker], tries: int
) -> LockBusy:
    who = "; ".join(b.describe() for b in blockers) or "a session that was gone when we looked"
    return LockBusy(
        f"migration on {target.where} gave up after {tries} tries: a table lock was not "
        f"granted within {settings.migrate_statement_lock_timeout:g} s (that step was rolled "
        f"back); "
        f"blocked by {who}",
        hint="end that transaction (or SELECT pg_terminate_backend(<pid>)), then migrate "
        "again; MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT / MOVIE_MIGRATE_LOCK_RETRIES wait longer",
        holders=[b.pid for b in blockers],
    )
