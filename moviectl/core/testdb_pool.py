"""A warm pool of test databases: clones made ahead, dropped behind, by a background thread.

A test's wait for a fresh, migrated database is then a queue pop. Every clone carries the
usual ownership mark, naming this pool's host and pid and expiring after an hour: a pool
that was killed leaves clones that ``prune_dead_pools`` (at the next pool's start) or
``moviectl testdb prune`` drop. Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from datetime import timedelta

from moviectl.core import testdb
from moviectl.infra.admin import clone_strategy, databases_named_like, drop_database_force
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.engine import connect
from moviectl.infra.settings import Settings

TTL = timedelta(hours=1)


def prune_dead_pools(settings: Settings, target: DbTarget) -> list[str]:
    """Drop clones of pools whose process on this host is gone (an interrupted run)."""
    dropped = []
    with connect(target, connect_timeout=settings.connect_timeout) as conn:
        for row in databases_named_like(conn, testdb.TEST_PREFIX):
            owner = str((row["mark"] or {}).get("owner") or "")
            pid = testdb.pool_pid_on_this_host(owner)
            if pid is not None and not os.path.exists(f"/proc/{pid}"):
                drop_database_force(conn, row["name"])
                dropped.append(row["name"])
    return dropped


class ClonePool:
    """Clones of ``template`` made ahead by a background thread, dropped behind by it.

    ``size``: how many it keeps ready. ``expected``: how many the run is expected to take
    (the plugin counts the tests that ask for one); the thread makes no more than that
    ahead, so a run's end leaves no unused clones made for nothing (a take beyond it
    still gets one, made on demand).
    """

    def __init__(
        self,
        settings: Settings,
        target: DbTarget,
        template: str,
        size: int,
        expected: int | None = None,
    ) -> None:
        self.settings, self.target, self.template = settings, target, template
        self.size = max(1, size)
        self.expected = expected
        self.made = 0
        self._ready: queue.Queue[testdb.TestDatabase] = queue.Queue()
        self._doomed: queue.Queue[str] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._full = threading.Event()
        self._waiting = 0
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="moviectl-clone-pool", daemon=True)
        self._thread.start()

    @property
    def fill(self) -> int:
        """How many clones the pool holds when full."""
        return self.size if self.expected is None else max(1, min(self.size, self.expected))

    def warm(self, timeout: float = 120) -> None:
        """Wait until the pool is full (or the thread failed)."""
        if not self._full.wait(timeout) and self._error is None:
            raise TimeoutError(f"the clone pool did not fill within {timeout:.0f}s")
        if self._error is not None:
            raise self._error

    def take(self, timeout: float = 120, *, until_full: bool = True) -> testdb.TestDatabase:
        """A fresh clone. Until the pool has been full once, a take waits for that (the
        clones are made ahead: the tests after it find them ready); then it waits only
        when the pool is empty. ``until_full=False``: just the next clone."""
        with self._lock:
            self._waiting += 1
        self._wake.set()
        import time

        deadline = time.monotonic() + timeout
        try:
            if until_full:
                self._full.wait(timeout)
            while True:
                if self._error is not None and self._ready.empty():
                    raise self._error  # the thread failed: say why now, not after the timeout
                try:
                    db = self._ready.get(timeout=0.5)  # returns as soon as a clone comes
                    break
                except queue.Empty:
                    if time.monotonic() > deadline:
                        raise TimeoutError("no test database came from the pool") from None
        finally:
            with self._lock:
                self._waiting -= 1
        self._wake.set()  # make the next one
        return db

    def give_back(self, name: str) -> None:
        """The test is done with it: dropped in the background."""
        self._doomed.put(name)
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        leftovers = []
        while not self._ready.empty():
            leftovers.append(self._ready.get_nowait().name)
        while not self._doomed.empty():
            leftovers.append(self._doomed.get_nowait())
        if leftovers:
            with contextlib.suppress(Exception):
                testdb.drop(self.settings, leftovers, target=self.target)

    def _wanted(self) -> bool:
        """Make a clone now: a test waits on an empty pool, or it is below its fill."""
        if self._waiting > self._ready.qsize():
            return True
        if self.expected is not None and self.made >= self.expected:
            return False
        return self._ready.qsize() < self.fill

    def _run(self) -> None:
        try:
            with connect(self.target, connect_timeout=self.settings.connect_timeout) as conn:
                strategy = clone_strategy(conn)  # once: one round trip less per clone
                while not self._stop.is_set():
                    if self._wanted():
                        self._ready.put(
                            testdb.create(
                                self.settings,
                                target=self.target,
                                template=self.template,
                                owner=testdb.pool_owner_tag(),
                                ttl=TTL,
                                conn=conn,
                                strategy=strategy,
                            )
                        )
                        self.made += 1
                        continue
                    self._full.set()  # nothing to make: full, or as full as it will get
                    if not self._doomed.empty():
                        # dropping waits until the pool is full: a test never waits for it
                        drop_database_force(conn, self._doomed.get_nowait())
                        continue
                    self._wake.wait(0.5)
                    self._wake.clear()
        except BaseException as exc:  # surfaced to the next take()
            self._error = exc
            self._full.set()
