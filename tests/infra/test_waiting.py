"""infra/waiting.py: ``poll_until`` on a fake clock (exact) and on the real one (bounded)."""

from __future__ import annotations

import time

import pytest

from moviectl.infra.waiting import poll_until


class Clock:
    """A clock that only moves when the code under test sleeps (or an attempt takes time)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def test_returns_as_soon_as_true_without_sleeping():
    clock = Clock()
    assert poll_until(lambda: "ready", 10, 1, clock=clock, sleep=clock.sleep) == "ready"
    assert clock.sleeps == []


def test_returns_the_first_true_value_after_retries():
    clock, answers = Clock(), iter([0, None, "", 42, 43])
    assert poll_until(lambda: next(answers), 10, 0.5, clock=clock, sleep=clock.sleep) == 42
    assert clock.sleeps == [0.5, 0.5, 0.5]


def test_never_sleeps_past_the_deadline_and_asks_a_last_time_at_it():
    clock, asked = Clock(), []

    def attempt() -> bool:
        asked.append(clock.now)
        return False

    assert poll_until(attempt, 2.0, 0.75, clock=clock, sleep=clock.sleep) is False
    assert clock.now == pytest.approx(2.0)  # not 2.25: the last pause is cut to the deadline
    assert asked == pytest.approx([0, 0.75, 1.5, 2.0])


def test_backoff_grows_the_pause_up_to_its_cap():
    clock = Clock()
    poll_until(lambda: False, 10, 1, backoff=2, max_interval=3, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([1, 2, 3, 3, 1])  # the last one ends at the deadline


def test_done_decides_and_the_last_value_is_returned_on_timeout():
    clock, n = Clock(), iter(range(100))
    last = poll_until(
        lambda: next(n), 1, 0.25, done=lambda v: v >= 50, clock=clock, sleep=clock.sleep
    )
    assert last == 4  # asked at 0, .25, .5, .75, 1.0: not done, the last answer


def test_retried_errors_wait_and_the_last_is_raised_at_the_deadline():
    clock, tries = Clock(), []

    def attempt() -> str:
        tries.append(clock.now)
        raise ConnectionError(f"try {len(tries)}")

    with pytest.raises(ConnectionError, match="try 3"):
        poll_until(attempt, 1, 0.5, retry=lambda e: True, clock=clock, sleep=clock.sleep)
    assert tries == pytest.approx([0, 0.5, 1.0])


def test_an_error_retry_does_not_cover_ends_the_wait_at_once():
    clock, answers = Clock(), iter(["later", "bad"])

    def attempt() -> str:
        if next(answers) == "later":
            raise TimeoutError
        raise ValueError("final")

    with pytest.raises(ValueError, match="final"):
        poll_until(
            attempt,
            60,
            1,
            retry=lambda e: isinstance(e, TimeoutError),
            clock=clock,
            sleep=clock.sleep,
        )
    assert clock.now == 1


def test_a_slow_attempt_is_not_followed_by_a_pause_past_the_deadline():
    clock = Clock()

    def attempt() -> bool:
        clock.now += 0.9  # the attempt itself takes time
        return False

    poll_until(attempt, 1.0, 0.5, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == pytest.approx([0.1])  # 0.9 + 0.1, then the last attempt


def test_real_clock_respects_the_deadline():
    started = time.monotonic()
    assert poll_until(lambda: False, 0.3, 0.2) is False
    took = time.monotonic() - started
    # the lower bound is the test (no early give-up); the upper one only catches a wait that
    # never ends (a sleep past the deadline, at 0.4, passes either way): generous for CI
    assert 0.3 <= took < 10
