"""The log of ``health --serve``: one escaped line per record, written off the event loop.

A probe must never wait on the log. When stderr is a pipe nobody drains (a stalled log
collector, a container runtime that fell behind), a write blocks once the pipe is full; made
on the event loop, that write stopped every probe with it. Here the loop only queues the
record; a thread formats and writes it. Past ``QUEUED`` waiting records, new ones are
dropped and counted, and the count is logged once the writer gets through again. At exit
the writer gets ``EXIT_WAIT`` seconds to finish, never more: a blocked stderr cannot hold
the shutdown.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from typing import IO

QUEUED = 4096  # lines waiting for the writer: hours of probe logs, a few MB at most
EXIT_WAIT = 2.0
FORMAT = "%(asctime)s %(levelname)s %(message)s"


class OneLineFormatter(logging.Formatter):
    """Every log line of ``--serve`` as one line: control characters in anything logged
    (a request's path, an error's text, a traceback's newlines) become escapes."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class BackgroundLog(logging.Handler):
    """Queues records for a writer thread (see the module's docstring)."""

    def __init__(self, stream: IO[str] | None = None, limit: int = QUEUED) -> None:
        super().__init__()
        self.setFormatter(OneLineFormatter(FORMAT))
        self.stream = stream or sys.stderr
        self.records: queue.Queue[logging.LogRecord | None] = queue.Queue(limit)
        self.dropped = 0
        self.writer = threading.Thread(target=self._write, name="log-writer", daemon=True)
        self.writer.start()

    def emit(self, record: logging.LogRecord) -> None:  # under the handler's lock
        try:
            self.records.put_nowait(record)
        except queue.Full:
            self.dropped += 1

    def close(self) -> None:
        """What is queued gets ``EXIT_WAIT`` seconds to be written; the rest is lost."""
        try:
            self.records.put(None, timeout=EXIT_WAIT)
            self.writer.join(EXIT_WAIT)
        except queue.Full:
            pass
        super().close()

    def _write(self) -> None:
        # straight to the file descriptor: no lock of sys.stderr is held while a write
        # blocks, so nothing else (the exit's flush of stderr) waits behind it
        try:
            fd: int | None = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        while (record := self.records.get()) is not None:
            self.acquire()
            dropped, self.dropped = self.dropped, 0
            self.release()
            try:
                lines = [self.format(record)]
            except Exception:
                self.handleError(record)
                continue
            if dropped:  # they came after this record: the queue was full of its kind
                lines.append(self._dropped_line(dropped))
            data = "".join(line + "\n" for line in lines)
            try:
                if fd is None:
                    self.stream.write(data)
                    self.stream.flush()
                else:
                    _write_all(fd, data.encode(errors="backslashreplace"))
            except OSError:  # stderr closed: nothing to tell it
                pass

    def _dropped_line(self, n: int) -> str:
        text = "%d log lines dropped: stderr was not read fast enough"
        return self.format(
            logging.LogRecord("moviectl.health", logging.WARNING, __file__, 0, text, (n,), None)
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
