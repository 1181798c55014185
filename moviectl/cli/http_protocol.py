"""uvicorn's h11 protocol with a request-header deadline (slowloris) and TCP_NODELAY.

uvicorn closes idle keep-alive connections, but a client that opens a connection and never
finishes its request headers is held forever. Each connection here has
``HEADER_TIMEOUT`` seconds to complete a request, after connecting and after each response.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0


class DeadlineH11Protocol(H11Protocol):
    _deadline: Any = None

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(HEADER_TIMEOUT, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        if self.cycle is None or self.cycle.response_complete:  # no request under way
            self.transport.close()

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # headers and body are two writes: no Nagle delay between them
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)
