"""Long work against a server that stops answering fails in bounded time (exit 3).

TCP keepalives and ``tcp_user_timeout`` (on every connection, see ``conninfo``) catch a dead
host or a cut network, but not a server process that is stopped (SIGSTOP, a hung VM): its
kernel still acknowledges probes and buffers data. ``StallWatch`` watches a progress
number; when it has not moved for ``stall_timeout`` seconds it asks the server the
``pg_isready`` question; if no answer comes, it runs its abort callbacks (kill the child
tool, cut the blocked connections) and the block raises ``Unreachable``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import Unreachable
from moviectl.infra.probe import ACCEPTING, REJECTING, ping_target


class StallWatch:
    def __init__(
        self,
        target: DbTarget,
        what: str,
        progress: Callable[[], int] = lambda: 0,
        *,
        stall_timeout: float,
        probe_timeout: float,
    ) -> None:
        self.target, self.what, self.progress = target, what, progress
        self.stall_timeout, self.probe_timeout = stall_timeout, probe_timeout
        self.stalled = False
        self._aborts: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="moviectl-stallwatch", daemon=True)

    @classmethod
    def for_settings(cls, settings: Any, target: DbTarget, what: str) -> StallWatch:
        """A watch with the operator's MOVIE_STALL_TIMEOUT and MOVIE_CONNECT_TIMEOUT."""
        return cls(
            target,
            what,
            stall_timeout=float(settings.stall_timeout),
            probe_timeout=float(settings.connect_timeout),
        )

    def track(self, progress: Callable[[], int]) -> None:
        """Watch this progress number (before the watch starts)."""
        self.progress = progress

    def on_stall(self, abort: Callable[[], None]) -> None:
        """Run ``abort`` if the server stops answering (kill a child, cut a connection)."""
        self._aborts.append(abort)

    def watch_connection(self, conn: Any) -> None:
        """Cut ``conn``'s socket on a stall, so a call blocked on it returns with an error."""
        self.on_stall(lambda: cut_connection(conn))

    def __enter__(self) -> StallWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        if exc is not None and self.stalled:
            raise self.error() from None

    def error(self) -> Unreachable:
        t = self.target
        return Unreachable(
            f"the server at {t.host}:{t.port} (database {t.database!r}) stopped answering "
            f"during {self.what}: no progress for {self.stall_timeout:g}s and no answer to a probe",
            hint="is the server paused, overloaded or cut off? raise MOVIE_STALL_TIMEOUT "
            "for servers that pause on purpose",
            host=t.host,
            port=t.port,
            database=t.database,
        )

    def _run(self) -> None:
        last, since = self.progress(), time.monotonic()
        tick = min(1.0, self.stall_timeout / 4)
        while not self._stop.wait(tick):
            now_value = self.progress()
            if now_value != last:
                last, since = now_value, time.monotonic()
                continue
            if time.monotonic() - since < self.stall_timeout:
                continue
            # the target's sslmode/hostaddr/hosts too: a TLS-only server must not read as gone
            answer = ping_target(self.target, timeout=self.probe_timeout)
            if answer.outcome in (ACCEPTING, REJECTING):
                since = time.monotonic()  # slow, not gone: keep waiting
                continue
            self.stalled = True
            for abort in self._aborts:
                with contextlib.suppress(Exception):
                    abort()
            return


def cut_connection(conn: Any) -> None:
    """Shut down a psycopg connection's socket from another thread (unblocks its I/O)."""
    import logging

    # closing a cut connection makes psycopg warn about the failed rollback: expected here
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    fd = conn.pgconn.socket
    with socket.socket(fileno=os.dup(fd)) as s:
        s.shutdown(socket.SHUT_RDWR)
