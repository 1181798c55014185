"""What every server backend shares: result dataclasses, the protocol, waiting and probing.

Backends import this module; this module imports no backend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from moviectl.infra.errors import MoviectlError, Unreachable
from moviectl.infra.server_facts import server_version
from moviectl.infra.waiting import poll_until

if TYPE_CHECKING:
    from collections.abc import Iterator

    from moviectl.infra.conninfo import DbTarget


@dataclass
class UpResult:
    backend: str
    already_running: bool
    host: str
    port: int
    database: str
    url: str
    version: str | None
    seconds: float
    detail: str = ""

    @classmethod
    def of(
        cls,
        backend: str,
        target: DbTarget,
        *,
        already: bool,
        version: str | None,
        started_at: float,
        detail: str,
    ) -> UpResult:
        """The result for ``target``, timed from ``started_at`` (a ``time.monotonic()``)."""
        return cls(
            backend,
            already,
            target.host,
            target.port,
            target.database,
            target.url(),
            version,
            round(time.monotonic() - started_at, 3),
            detail,
        )


@dataclass
class DownResult:
    backend: str
    was_running: bool
    removed_data: bool
    detail: str = ""


@dataclass
class ServerStatus:
    backend: str
    state: str  # running | stopped | absent | unreachable
    host: str
    port: int
    database: str
    url: str
    version: str | None = None
    uptime_seconds: float | None = None
    data_size_bytes: int | None = None
    connections: int | None = None
    max_connections: int | None = None
    detail: str = ""
    exit_code: int = 0  # 0 when it answers and lets us in; else why not (3, 4, …)

    @classmethod
    def of(cls, backend: str, target: DbTarget, state: str, detail: str = "") -> ServerStatus:
        """What the backend knows of ``target``; ``probe_status`` asks the live server."""
        t = target
        return cls(backend, state, t.host, t.port, t.database, t.url(), detail=detail)


class Backend(Protocol):
    name: str

    def up(self, *, wait: bool, timeout: float) -> UpResult: ...
    def down(self, *, volumes: bool) -> DownResult: ...
    def status(self) -> ServerStatus: ...
    def logs(self, *, tail: int, follow: bool) -> Iterator[str]: ...


def wait_ready(target: DbTarget, timeout: float, connect_timeout: int = 5) -> str:
    """Wait until ``target`` accepts an authenticated connection; return the server version.

    Unreachable/starting servers are retried until ``timeout``; a wrong password or a
    missing database fails at once (waiting will not fix them).
    """
    each = min(connect_timeout, max(1, int(timeout)))
    return poll_until(
        lambda: ready_version(target, each),
        timeout,
        0.05,
        backoff=1.5,
        max_interval=0.5,
        retry=not_ready_yet,
    )


def ready_version(target: DbTarget, connect_timeout: int) -> str:
    """One login to ``target``: the server's version, or the error that stopped it."""
    from moviectl.infra.engine import connect

    with connect(target, connect_timeout=connect_timeout) as c:
        return server_version(c)


def not_ready_yet(exc: Exception) -> bool:
    """Will waiting fix this? A server not answering yet, or one still starting up (whose
    "the database system is starting up" arrives as an auth-less FATAL)."""
    if isinstance(exc, Unreachable):
        return True
    return isinstance(exc, MoviectlError) and "starting up" in exc.message


def probe_status(status: ServerStatus, target: DbTarget, connect_timeout: int) -> ServerStatus:
    """Fill version, uptime, size and connections from the live server."""
    from moviectl.infra.engine import connect

    try:
        with connect(target, connect_timeout=connect_timeout) as c:
            version = server_version(c)
            row = c.execute(
                """SELECT extract(epoch FROM now() - pg_postmaster_start_time()),
                          pg_database_size(current_database()),
                          (SELECT count(*) FROM pg_stat_activity
                           WHERE backend_type = 'client backend'),
                          current_setting('max_connections')::int"""
            ).fetchone()
    except MoviectlError as exc:
        status.state = "unreachable" if isinstance(exc, Unreachable) else status.state
        status.detail = exc.message
        status.exit_code = int(exc.exit_code)
        return status
    assert row is not None
    status.version, status.uptime_seconds = version, float(row[0])
    status.data_size_bytes, status.connections, status.max_connections = row[1], row[2], row[3]
    return status
