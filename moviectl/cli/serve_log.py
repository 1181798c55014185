"""The log of ``health --serve``: one escaped line per record, written off the event loop.

A probe must never wait on the log. When stderr is a pipe nobody drains (a stalled log
collector, a container runtime that fell behind), a write blocks once the pipe is full; made
on the event loop, that write stopped every probe with it. Here the loop only queues the
record; a thread formats and writes what is waiting, every 50 ms. Past ``QUEUED`` waiting
records, new ones are dropped and counted, and the count is logged once the writer gets
through again. At exit a writer that makes progress gets up to ``EXIT_CAP`` seconds, one
blocked for ``EXIT_WAIT`` seconds none: a stderr nobody reads cannot hold the shutdown.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time
from typing import IO

QUEUED = 4096  # lines waiting for the writer: hours of probe logs, a few MB at most
EXIT_WAIT = 2.0  # at exit, a write blocked this long means nobody reads stderr
EXIT_CAP = 10.0  # and the exit waits no longer than this for a slow one
EVERY = 0.05  # how often the writer wakes: a log line is at most this late
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every log line of ``--serve`` as one line: control characters in anything logged
    (a request's path, an error's text, a traceback's newlines) become escapes."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if text.isprintable():  # the usual line: nothing to escape, no loop over its characters
            return text
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class BackgroundLog(logging.Handler):
    """Queues records for a writer thread (see the module's docstring). The thread wakes
    every ``EVERY`` seconds and writes what is waiting in one write: a wake-up per record
    cost the event loop half its throughput in GIL hand-offs."""

    def __init__(self, stream: IO[str] | None = None, limit: int = QUEUED) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter(FORMAT))
        self.stream = stream or sys.stderr
        self.limit = limit
        self.pending: collections.deque[logging.LogRecord] = collections.deque()
        self.dropped = 0
        self.closing = threading.Event()
        self.moved = time.monotonic()  # when a write last went through
        self.writer = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self.writer.start()

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock
        if len(self.pending) < self.limit:
            self.pending.append(record)  # deque appends and pops are atomic
        else:
            self.dropped += 1

    def close(self) -> None:
        """The writer finishes what is queued while its writes go through, for at most
        ``EXIT_CAP`` seconds. A writer whose last write has not returned for ``EXIT_WAIT``
        seconds means nobody reads stderr: it is pointed at /dev/null, so the exit's own
        last line (the "stopped" line) cannot block either (also when a second signal
        cuts this wait short)."""
        if self.closing.is_set():
            return
        self.closing.set()
        self.moved = time.monotonic()
        try:
            give_up = self.moved + EXIT_CAP
            while self.writer.is_alive() and time.monotonic() < give_up:
                if time.monotonic() - self.moved > EXIT_WAIT:
                    break
                self.writer.join(0.1)
        finally:
            if self.writer.is_alive():
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    fd = self.stream.fileno()
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, fd)
                    os.close(devnull)
            super().close()

    def _run(self) -> None:
        # straight to the file descriptor: no lock of sys.stderr is held while a write
        # blocks, so nothing else (the exit's flush of stderr) waits behind it
        try:
            fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        while not self.closing.wait(EVERY):
            self._write(fd)
        self._write(fd)

    def _write(self, fd: int | None) -> None:
        lines = []
        while self.pending:
            record = self.pending.popleft()
            try:
                lines.append(self.format(record))
            except Exception:
                self.handleError(record)
        self.acquire()
        dropped, self.dropped = self.dropped, 0
        self.release()
        if dropped:  # they came after what is written now: the queue was full of those
            lines.append(self._dropped_line(dropped))
        if not lines:
            return
        data = "".join(line + "\n" for line in lines)
        try:
            if fd is None:
                self.stream.write(data)
                self.stream.flush()
            else:
                view = memoryview(data.encode(errors="backslashreplace"))
                while view:
                    # a pipe takes a big write whole or blocks: 64 KiB at a time, so
                    # a slow reader shows as progress
                    view = view[os.write(fd, view[: 1 << 16]) :]
                    self.moved = time.monotonic()
        except Exception:  # stderr closed, or a stream that refuses: nothing to tell it
            pass

    def _dropped_line(self, n: int) -> str:
        text = "%d log lines dropped: stderr was not read fast enough"
        return self.format(
            logging.LogRecord("moviectl.health", logging.WARNING, __file__, 0, text, (n,), None)
        )
