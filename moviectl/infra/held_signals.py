"""SIGINT and SIGTERM held back while a few milliseconds of work must not be cut in two.

moviectl unwinds on SIGINT (``KeyboardInterrupt``) and SIGTERM (``Terminated``, a
``SystemExit``, from ``terminate``, installed by ``cli/entry.py``). Some places must not be
unwound from inside: ``subprocess.Popen``, which waits for the child's exec (unwound there,
it leaves a child nobody holds, running until moviectl exits: ``pgtools.popen_child``), and a
database's ``CREATE`` and its ownership mark (``admin.create_database``).

``held()`` records either signal instead, and on leaving the block puts the handlers back
and raises it there, so it is handled as it would have been, a moment later. Python runs
signal handlers in the main thread only: elsewhere there is nothing to hold.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOPS = (signal.SIGINT, signal.SIGTERM)


class Terminated(SystemExit):
    """SIGTERM as an exception (``cli/entry.py`` installs the handler): everything unwinds
    as for Ctrl-C (child tools killed, temp files removed), then the one error handler says
    so and the process exits 143, as a shell reports SIGTERM."""


def stopping() -> None:
    """moviectl is on its way out because of SIGINT or SIGTERM: a second one changes nothing
    (it would cut the report in two: two JSON documents, or a traceback). Main thread only."""
    if threading.current_thread() is threading.main_thread():
        for s in STOPS:
            signal.signal(s, signal.SIG_IGN)


def terminate(signum: int, frame: object) -> None:
    """The SIGTERM handler."""
    raise Terminated(128 + signum)


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM for the block; a held one is raised as it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    handlers = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in STOPS}
    try:
        yield
    finally:
        for s, handler in handlers.items():  # None: not set from Python (the default)
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])  # its handler runs inside this call
