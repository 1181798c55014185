"""infra/held_signals.py: SIGINT and SIGTERM wait for the end of the block, then act as
they would have. (The Ctrl-C test of a backup, tests/core/test_backups_interrupted.py, lands
while the backup settles its settings: exit 130, where it was -2 four runs in ten.)"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from moviectl.infra.held_signals import held


class _Stop(BaseException):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stop(signum)


def test_a_signal_inside_the_block_is_raised_as_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt), held():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # bytecode boundaries, where a handler would run
            pass
        done.append("the block ran to its end")
    assert done == ["the block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_the_handler_in_place_is_the_one_that_runs_and_stays():
    old = signal.signal(signal.SIGTERM, _stop)
    try:
        with pytest.raises(_Stop) as exc, held():
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        assert exc.value.args == (signal.SIGTERM,)
        assert signal.getsignal(signal.SIGTERM) is _stop
        with held():
            pass  # nothing held: nothing raised
    finally:
        signal.signal(signal.SIGTERM, old)


def test_outside_the_main_thread_there_is_nothing_to_hold():
    seen = []

    def work() -> None:
        with held():
            seen.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert seen == [signal.default_int_handler]


def test_on_the_way_out_a_second_signal_changes_nothing():
    """Once a signal is being reported, another one must not cut the report in two (two
    JSON documents, or a traceback): ``stopping`` ignores both."""
    from moviectl.infra.held_signals import stopping

    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stopping()
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
