"""infra/pgtools.py: child tools cannot be lost to a signal while they start."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading

import psutil

from moviectl.infra.pgtools import popen_child


class _Stop(BaseException):
    """What moviectl's SIGTERM handler raises (SystemExit), under a name only this test uses."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _sleepers() -> list[psutil.Process]:
    return [c for c in psutil.Process().children() if c.name() == "sleep"]


def test_a_signal_while_a_child_starts_never_leaves_it_running():
    """SIGTERM at any moment of ``popen_child``: either the caller holds the child, or the
    child is dead. (Unwound from inside ``Popen``, which waits for the exec, the child ran on
    with nobody holding it: free to recreate a temp file the cleanup had just removed.)"""
    old = signal.signal(signal.SIGTERM, _raise_stop)
    lost, hits = [], 0
    try:
        for _ in range(150):
            before = {p.pid for p in _sleepers()}
            delay = random.uniform(0, 0.004)
            timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGTERM))
            proc = None
            try:
                timer.start()
                proc = popen_child(["sleep", "30"], stdout=subprocess.DEVNULL)
                timer.join()  # the signal lands by the time the timer thread ends
                for _ in range(1000):  # give the handler its bytecode boundaries
                    pass
            except _Stop:
                hits += 1
            timer.join()
            if proc is not None:
                proc.kill()
                proc.wait()
            lost += [p for p in _sleepers() if p.pid not in before]
    finally:
        signal.signal(signal.SIGTERM, old)
        for p in lost:
            p.kill()
    assert hits > 0
    assert lost == [], f"{len(lost)} children left running by a signal during their start"
