"""A warm pool of test databases: clones made ahead by maker threads, dropped behind by another.

A test's wait for a fresh, migrated database is then a queue pop. The pool is bounded: the
clones it holds besides those tests are using (ready, being made, given back and not yet
dropped) never exceed ``size``, so at most ``size`` + the tests in flight are alive at once,
and a run of short tests never piles up given-back clones (the maker waits for the dropper
rather than run ahead of it). Every clone carries the usual ownership mark, naming this
pool's host and pid and expiring after an hour: what ``close`` had no time to drop, or what a
killed run left, ``prune_dead_pools`` (at the next pool's start) or ``moviectl testdb prune``
drop. Nothing else is touched.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from moviectl.core import testdb
from moviectl.infra.admin import (
    TEST_PREFIX,
    clone_strategy,
    databases_named_like,
    drop_database_force,
)
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.engine import connect
from moviectl.infra.processes import pid_alive
from moviectl.infra.settings import Settings

TTL = timedelta(hours=1)
CLOSE_WAIT = 10.0  # seconds close() spends dropping; the rest is left marked for a prune


def prune_dead_pools(settings: Settings, target: DbTarget) -> list[str]:
    """Drop clones of pools whose process on this host is gone (an interrupted run)."""
    dropped = []
    with connect(target, connect_timeout=settings.connect_timeout) as conn:
        for row in databases_named_like(conn, TEST_PREFIX):
            owner = str((row["mark"] or {}).get("owner") or "")
            pid = testdb.pool_pid_on_this_host(owner)
            if pid is not None and not pid_alive(pid):
                drop_database_force(conn, row["name"])
                dropped.append(row["name"])
    return dropped


class ClonePool:
    """Clones of ``template``: made ahead by a maker thread, dropped behind by a dropper.

    ``size``: how many clones the pool may hold besides those in use (ready + being made +
    given back, not dropped yet). ``expected``: how many the run is expected to take (the
    plugin counts the tests that ask for one); the maker makes no more than that ahead, so a
    run's end leaves no clones made for nothing (a take beyond it still gets one).

    The maker's order: a clone for a test that waits, then clones ahead up to ``size`` while
    the dropper is not behind. ``makers``: clones made at once. One CREATE DATABASE copies
    the template in one backend, a core's work; with tests shorter than a clone, clones are
    the pace, and two in flight make them twice as fast on a server with two cores free
    (more only queue). ``prune``: run by the dropper before its first drop, off the first
    test's wait (what a killed run left). ``alive``/``peak``: clones that exist (counted
    from the start of their CREATE to the end of their DROP), now and at most.
    """

    def __init__(
        self,
        settings: Settings,
        target: DbTarget,
        template: str,
        size: int,
        expected: int | None = None,
        makers: int = 1,
        prune: Callable[[], object] | None = None,
    ) -> None:
        self.settings, self.target, self.template = settings, target, template
        self.size = max(1, size)
        self.expected = expected
        self.made = self.dropped = self.alive = self.peak = 0
        self.left_behind: list[str] = []  # what close() had no time to drop
        self._ready: deque[testdb.TestDatabase] = deque()
        self._doomed: deque[str] = deque()
        self._making = 0
        self._waiting = 0
        self._closing = False  # no more clones: drop what is left
        self._abandon = False  # close()'s time is up: the dropper stops after its drop
        self._makers_left = makers = max(1, min(makers, self.size))
        self._prune = prune
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._makers = [
            self._start(self._make_loop, f"moviectl-clone-maker-{n}") for n in range(makers)
        ]
        self._dropper = self._start(self._drop_loop, "moviectl-clone-dropper")

    def _start(self, loop: Callable[[Any], None], name: str) -> threading.Thread:
        thread = threading.Thread(target=self._guarded, args=(loop,), name=name, daemon=True)
        thread.start()
        return thread

    def take(self, timeout: float = 120) -> testdb.TestDatabase:
        """A fresh clone: the first one ready (made now if none is)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._waiting += 1
            self._cond.notify_all()
            try:
                while not self._ready:
                    if self._closing:
                        raise RuntimeError("the clone pool is closed (the session has ended)")
                    if self._error is not None:
                        raise self._error  # a thread failed: say why now, not after the timeout
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError("no test database came from the pool")
                    self._cond.wait(left)
                db = self._ready.popleft()
            finally:
                self._waiting -= 1
            self._cond.notify_all()  # room for one more ahead
        return db

    def give_back(self, name: str) -> None:
        """The test is done with it: dropped in the background."""
        with self._cond:
            self._doomed.append(name)
            self._cond.notify_all()

    def close(self, wait: float = CLOSE_WAIT) -> None:
        """Stop making; drop what is left (given back, or ready and unused) for at most
        ``wait`` seconds. What is still there then stays, marked with this pool's pid:
        the next run's ``prune_dead_pools`` or ``moviectl testdb prune`` drops it."""
        deadline = time.monotonic() + wait
        with self._cond:
            self._closing = True
            self._doomed.extend(db.name for db in self._ready)
            self._ready.clear()
            self._cond.notify_all()
        for thread in (*self._makers, self._dropper):
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            self._abandon = True
            self._cond.notify_all()
            self.left_behind = list(self._doomed)

    def stopped(self, timeout: float) -> bool:
        """Wait for both threads to end (after ``close``, which does not wait past its bound)."""
        for thread in (*self._makers, self._dropper):
            thread.join(timeout)
        return not any(t.is_alive() for t in (*self._makers, self._dropper))

    # ---- the threads ---------------------------------------------------------------------
    def _guarded(self, loop: Callable[[Any], None]) -> None:
        try:
            with connect(self.target, connect_timeout=self.settings.connect_timeout) as conn:
                loop(conn)
        except BaseException as exc:  # surfaced to the next take()
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._makers_left -= loop == self._make_loop
                self._cond.notify_all()

    def _held(self) -> int:
        """Clones the pool holds besides those in use."""
        return len(self._ready) + len(self._doomed) + self._making

    def _make_now(self) -> bool:
        if self._error is not None or self._held() >= self.size:
            return False  # at the bound: the dropper makes room first
        if self._waiting > len(self._ready) + self._making:
            return True  # a test waits
        if self.expected is not None and self.made + self._making >= self.expected:
            return False
        return len(self._ready) + self._making < self.size

    def _make_loop(self, conn: Any) -> None:
        strategy = clone_strategy(conn)  # once: one round trip less per clone
        while True:
            with self._cond:
                while not self._closing and not self._make_now():
                    self._cond.wait()
                if self._closing:
                    return
                self._making += 1
                self.alive += 1
                self.peak = max(self.peak, self.alive)
            try:
                db = testdb.create(
                    self.settings,
                    target=self.target,
                    template=self.template,
                    owner=testdb.pool_owner_tag(),
                    ttl=TTL,
                    conn=conn,
                    strategy=strategy,
                )
            except BaseException:
                with self._cond:
                    self._making -= 1  # whether it exists is unknown: prune judges by mark
                raise
            with self._cond:
                self._making -= 1
                self.made += 1
                if self._closing:
                    self._doomed.append(db.name)
                else:
                    self._ready.append(db)
                self._cond.notify_all()

    def _drop_loop(self, conn: Any) -> None:
        if self._prune is not None:
            self._prune()
        while True:
            with self._cond:
                while not self._doomed and not self._abandon:
                    if self._closing and not self._makers_left:
                        return  # nothing left, and nothing more will come
                    self._cond.wait()
                if self._abandon:
                    return
                name = self._doomed[0]  # stays counted until it is gone
            drop_database_force(conn, name)
            with self._cond:
                self._doomed.remove(name)
                if name in self.left_behind:  # close() gave up on it while it was dropped
                    self.left_behind.remove(name)
                self.alive -= 1
                self.dropped += 1
                self._cond.notify_all()
