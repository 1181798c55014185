"""Retention as operators write it: keep-last and grandfather-father-son, computed on
backups spread over weeks (``plan`` alone: no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moviectl.core.backups.retention import Candidate, Policy, plan
from moviectl.infra.errors import UsageError

START = datetime(2026, 11, 1, 3, 0, tzinfo=UTC)  # a Sunday


def nightly(days: int, *, verified: set[int] = frozenset(), pinned: set[int] = frozenset()):  # type: ignore[assignment]
    """One backup a night for ``days`` nights (day 0 the oldest), two on the last day."""
    out = [
        Candidate(f"b{d}", f"b{d}", START + timedelta(days=d), d in verified, d in pinned)
        for d in range(days)
    ]
    out.append(Candidate("late", "late", START + timedelta(days=days - 1, hours=12), False, False))
    return out


def kept(decisions) -> list[str]:
    return [d.path for d in decisions if d.keep]


def test_keep_last_counts_backups_not_days():
    assert kept(plan(nightly(10), Policy(last=3))) == ["late", "b9", "b8"]


def test_daily_keeps_the_newest_of_each_day():
    # the last day has two backups: the later one stands for it
    assert kept(plan(nightly(10), Policy(daily=3))) == ["late", "b8", "b7"]


def test_daily_and_weekly_together():
    # 30 nights from Sunday 1 Nov: ISO weeks end on Sundays 1, 8, 15, 22, 29 Nov
    decisions = plan(nightly(30), Policy(daily=7, weekly=4))
    assert kept(decisions) == ["late", *(f"b{d}" for d in range(28, 22, -1)), "b21", "b14"]
    why = {d.path: d.reasons for d in decisions}
    assert why["b28"] == ["daily: newest of 2026-11-29", "weekly: newest of 2026-W48"]
    assert why["b14"] == ["weekly: newest of 2026-W46"]
    assert why["b3"] == []


def test_monthly_keeps_the_newest_of_each_month():
    assert kept(plan(nightly(45), Policy(monthly=2))) == ["late", "b29"]


def test_the_newest_verified_and_pinned_backups_always_stay():
    decisions = plan(nightly(10, verified={2, 4}, pinned={0}), Policy(last=1))
    assert kept(decisions) == ["late", "b4", "b0"]
    why = {d.path: d.reasons for d in decisions}
    assert why["b4"] == ["the newest verified backup"] and why["b0"] == ["pinned"]
    assert why["b2"] == []  # verified, but not the newest verified


def test_no_policy_is_refused():
    with pytest.raises(UsageError, match="no retention policy"):
        plan(nightly(3), Policy())
