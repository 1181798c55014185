"""``poll_until``: the one wait loop (a server that starts, a check that passes, ...).

Every wait in moviectl used to be a hand-written ``while`` with its own deadline
arithmetic, and each got the edge a little differently (one slept past its deadline,
one gave up a whole interval early). This one asks at once, sleeps at most until the
deadline, asks a last time at the deadline, and returns the last answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(
    attempt: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    *,
    done: Callable[[T], bool] = bool,
    backoff: float = 1.0,
    max_interval: float | None = None,
    retry: Callable[[Exception], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Call ``attempt`` until ``done(value)`` or ``timeout`` seconds pass; the last value.

    ``interval``: the first pause between attempts, multiplied by ``backoff`` after each
    (at most ``max_interval``). No pause goes past the deadline: the last attempt is made
    at it (an attempt itself may take longer; that is the attempt's own timeout's business).
    ``retry``: an exception for which it says True counts as "not yet"; once time is up,
    that last exception is raised. Any other exception ends the wait at once.
    ``clock`` and ``sleep``: for tests.
    """
    deadline = clock() + max(0.0, timeout)
    delay = interval
    while True:
        try:
            value = attempt()
        except Exception as exc:
            if retry is None or not retry(exc) or clock() >= deadline:
                raise
        else:
            if done(value) or clock() >= deadline:
                return value
        sleep(max(0.0, min(delay, deadline - clock())))
        delay *= backoff
        if max_interval is not None:
            delay = min(delay, max_interval)
