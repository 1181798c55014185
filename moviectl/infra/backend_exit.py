"""Closed connections whose server process may not have exited yet.

A backend counts against max_connections and the role's and database's CONNECTION
LIMIT until its process has exited, a moment after the client hung up; so under a
CONNECTION LIMIT 1 the next login (moviectl's own, or the pg_restore it starts) can be
refused "too many connections for role" although nothing else is connected. A cleanly
closed connection leaves a duplicate of its socket here; before the next login,
``settle`` waits, briefly, for the server to close its end: its process is gone then.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import threading
import time

_lock = threading.Lock()
_closing: list[socket.socket] = []
WAIT = 1.0  # seconds at most, all closed connections together: exit takes milliseconds


def watch(fd: int) -> None:
    """Keep a duplicate of a connection's socket ``fd``, taken before libpq closes it."""
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    with _lock:
        _closing.append(sock)


def settle(wait: float = WAIT) -> None:
    """Wait until the servers of the watched connections have closed their ends (their
    processes have exited), ``wait`` seconds at most, then forget them all."""
    with _lock:
        socks = _closing[:]
        _closing.clear()
    deadline = time.monotonic() + wait
    for sock in socks:
        with sock, contextlib.suppress(OSError):
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                if not sock.recv(4096):  # the server's end is closed
                    break


# at exit no login follows: close what is kept, waiting for none (unclosed, each socket
# would be a ResourceWarning at shutdown)
atexit.register(settle, 0.0)
