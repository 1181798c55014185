"""A request-head deadline (slowloris) for ``health --serve``, around uvicorn's protocol.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), but a client that
opens a connection and never finishes its request head is held forever, and enough of
them fill ``limit_concurrency``. Here each connection has ``HEADER_TIMEOUT`` seconds to
complete a request head (the blank line that ends it) after connecting and after each
response, or it is closed.

Built on asyncio's public interfaces only: ``DeadlineLoop`` is an event loop whose servers
wrap the protocol uvicorn makes for each connection in ``HeadDeadline``, which sees the
bytes that come in and the responses that go out, and forwards everything.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterable
from typing import Any

HEADER_TIMEOUT = 10.0
_HEAD_END = re.compile(rb"\n\r?\n")  # where h11 ends a request head (CRLF or bare LF)


class HeadDeadline(asyncio.Protocol):
    """One connection: the deadline is armed on connecting and whenever the server writes
    (a response), and disarmed when a request head is complete (the app's turn)."""

    def __init__(self, inner: asyncio.Protocol, loop: asyncio.AbstractEventLoop) -> None:
        self.inner, self.loop = inner, loop
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""  # the end of what came in, for a head end split across reads

    def arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.tail = b""
        self.timer = self.loop.call_later(HEADER_TIMEOUT, self.expire)

    def disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def expire(self) -> None:
        self.timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.arm()
        self.inner.connection_made(WatchedTransport(transport, on_write=self.arm))

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:  # waiting for a head
            seen = self.tail + data
            if _HEAD_END.search(seen):
                self.disarm()
            else:
                self.tail = seen[-2:]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
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
    """asyncio's event loop, whose servers put ``HeadDeadline`` around every connection."""

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
    ) -> asyncio.Server:
        def guarded() -> asyncio.BaseProtocol:
            inner = protocol_factory()
            assert isinstance(inner, asyncio.Protocol)
            return HeadDeadline(inner, self)

        return await super().create_server(guarded, *args, **kwargs)
