"""The connection layer of ``health --serve``, around uvicorn's protocol: deadlines, limits
(its log is ``serve_log.py``).

What uvicorn alone does not do, and a hostile client exploits:

- **Slowloris**: each connection has ``HEADER_TIMEOUT`` seconds to complete a request head
  (the blank line that ends it) after connecting and after each response, or it is closed.
- **A client that reads nothing**: pipelined requests whose answers it never reads fill
  the buffers; uvicorn's app would wait for ever to write. Once writing has been paused
  for ``HEADER_TIMEOUT`` seconds the connection is aborted (a close would wait to flush).
- **Idle connections crowding out probes**: uvicorn's ``limit_concurrency`` counts idle
  connections, so 257 of them made every probe 503. It is not used; instead at most
  ``max_connections`` are open, and a new one beyond that closes the oldest connection
  still waiting for its head (idle or incomplete): a probe that sends its request at once
  is always served.
- **Heads over the documented limits**: h11 checks its size limit only on a head that has
  not arrived yet (a 60 KB head in one read passed), and a larger one got a reset. Here the
  head is measured as it arrives: a request target over ``MAX_TARGET`` bytes is answered 414,
  a head over ``MAX_HEAD`` bytes 431, each with a body; the rest of what the client sends is
  read and discarded for a moment (a bounded lingering close), so it reads the answer
  instead of a reset.

Built on asyncio's public interfaces only: ``DeadlineLoop`` is an event loop whose servers
wrap the protocol uvicorn makes for each connection in ``HeadDeadline``, which sees the
bytes that come in and the responses that go out, and forwards everything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from moviectl.core.health.http import MAX_TARGET

HEADER_TIMEOUT = 10.0
MAX_HEAD = 16 * 1024  # request line and headers, through the blank line: longer is 431
MAX_CONNECTIONS = 1024
LINGER_SECONDS, LINGER_BYTES = 5.0, 4 * 1024 * 1024  # after a 414/431: drain, then close
_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a request head (CRLF or bare LF)
_REASONS = {414: "URI Too Long", 431: "Request Header Fields Too Large"}
log = logging.getLogger("moviectl.health")


def rejection(code: int, error: str) -> bytes:
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class HeadDeadline(asyncio.Protocol):
    """One connection: the head deadline is armed on connecting and whenever the server
    writes (a response), and disarmed when a request head is complete (the app's turn). A
    second deadline runs while writing is paused: a client that reads none of its answers
    (pipelined requests) for ``HEADER_TIMEOUT`` seconds is cut off, app's turn or not.

    Arming only moves a due time: the one timer, when it fires early, sleeps again until
    the nearer one. A timer per write cost every keep-alive request two heap pushes."""

    def __init__(self, inner: asyncio.Protocol, loop: DeadlineLoop) -> None:
        self.inner, self.loop = inner, loop
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.head_due: float | None = None  # waiting for a head until then (or lingering)
        self.stall_due: float | None = None  # writing paused: the client must read by then
        self.head = b""  # the request head so far, while waiting for one (at most MAX_HEAD)
        self.drained: int | None = None  # rejected: bytes discarded since

    @property
    def waiting(self) -> bool:
        """Waiting for a request head (idle or incomplete), not in the app's hands."""
        return self.head_due is not None and self.drained is None

    @property
    def due(self) -> float | None:
        dues = [d for d in (self.head_due, self.stall_due) if d is not None]
        return min(dues) if dues else None

    def arm(self) -> None:
        if self.drained is None:  # rejected: only the linger deadline applies
            self.head = b""
            self.close_in(HEADER_TIMEOUT)

    def close_in(self, seconds: float) -> None:
        self.head_due = self.loop.time() + seconds
        self._wake_by(self.head_due)

    def _wake_by(self, when: float) -> None:
        if self.timer is None or self.timer.when() > when:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(when, self.expire)

    def disarm(self) -> None:
        self.head_due = None  # the timer, if any, finds nothing due and stops

    def expire(self) -> None:
        self.timer = None
        due = self.due
        if due is None:
            return
        if due - self.loop.time() > 0.01:  # re-armed since (timers may fire a tick early)
            self._wake_by(due)
            return
        self.close()

    def close(self) -> None:
        """Closed now: with answers still queued for a client that reads none, a close
        would wait for ever to send them (and the connection count as idle), so it aborts."""
        self.head_due = self.stall_due = None
        t = self.transport
        if t is None:
            return
        if t.get_write_buffer_size():
            t.abort()
        elif not t.is_closing():
            t.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.arm()
        self.loop.opened(self)
        self.inner.connection_made(WatchedTransport(transport, on_write=self.arm))

    def data_received(self, data: bytes) -> None:
        if self.drained is not None:  # answered 414/431: read and drop, within bounds
            self.drained += len(data)
            if self.drained > LINGER_BYTES:
                self.close()
            return
        if self.head_due is not None:  # waiting for a head
            seen = self.head + data
            end = _HEAD_END.search(seen)
            size = end.end() if end else len(seen)
            line = seen.split(b"\n", 1)[0]
            parts = line.split(b" ", 2)
            if len(parts) > 1 and len(parts[1]) > MAX_TARGET:
                return self.reject(414, "URI too long", f"a target over {MAX_TARGET} bytes")
            if size > MAX_HEAD:
                return self.reject(
                    431, "request header fields too large", f"a head over {MAX_HEAD} bytes"
                )
            if end:
                self.disarm()
                self.head = b""
            else:
                self.head = seen
        self.inner.data_received(data)

    def reject(self, code: int, error: str, what: str) -> None:
        """Answer ``code`` ourselves (uvicorn never sees this request), then close once the
        client stops sending, or after ``LINGER_SECONDS``."""
        assert self.transport is not None
        self.head, self.drained = b"", 0
        peer = self.transport.get_extra_info("peername")
        log.info("%d %s from %s", code, what, peer[0] if peer else "?")
        self.transport.write(rejection(code, error))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.close_in(LINGER_SECONDS)

    def eof_received(self) -> bool | None:
        if self.drained is not None:
            return False  # the client is done: close
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.loop.closed(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.stall_due = self.loop.time() + HEADER_TIMEOUT
        self._wake_by(self.stall_due)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.stall_due = None
        self.inner.resume_writing()


class WatchedTransport(asyncio.Transport):
    """The connection's transport as the server's protocol sees it: the transport itself,
    but every write is reported first."""

    def __init__(self, transport: asyncio.Transport, on_write: Callable[[], None]) -> None:
        super().__init__()
        self.inner, self.on_write = transport, on_write

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.on_write()
        self.inner.write(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.on_write()
        self.inner.writelines(list_of_data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def write_eof(self) -> None:
        self.inner.write_eof()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()


class DeadlineLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop, whose servers put ``HeadDeadline`` around every connection and
    keep at most ``max_connections`` open (the oldest waiting one makes room)."""

    def __init__(self, max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__()
        self.max_connections = max_connections
        self.connections: dict[HeadDeadline, None] = {}  # oldest first

    def opened(self, conn: HeadDeadline) -> None:
        self.connections[conn] = None
        if len(self.connections) > self.max_connections:
            # the oldest connection still waiting for a head; the new one if none is
            oldest = next((c for c in self.connections if c.waiting), conn)
            self.connections.pop(oldest, None)
            oldest.close()

    def closed(self, conn: HeadDeadline) -> None:
        self.connections.pop(conn, None)

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        def guarded() -> asyncio.BaseProtocol:
            inner = protocol_factory()
            assert isinstance(inner, asyncio.Protocol)
            return HeadDeadline(inner, self)

        return await super().create_server(guarded, *args, **kwargs)
