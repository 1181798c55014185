"""The timeline a restore ends on, from the archive's file names alone (no server): past
every timeline the archive shows, a cut-short promote's leftovers included, following
exactly what PostgreSQL's `latest` follows (``core/pitr/timelines.py``)."""

from __future__ import annotations

import pytest

from moviectl.core.pitr import timelines
from moviectl.infra.errors import Refused

SEG = "0000000{}0000000000000005"


def test_an_archive_without_leftovers_keeps_postgresqls_own_choice() -> None:
    names = [SEG.format(1), "00000002.history", SEG.format(2), "000000010000000000000004.partial"]
    plan = timelines.plan(names, 1)
    assert (plan.follow, plan.taken, plan.target_timeline()) == (2, [], "'latest'")


def test_leftovers_without_a_history_file_are_taken_never_followed() -> None:
    """A promote cut short before its history file: timeline 2's segments (and a .backup
    label) with no 00000002.history. The restore follows 1, named, and takes 3."""
    names = [SEG.format(1), SEG.format(2), "000000020000000000000006.00000028.backup"]
    plan = timelines.plan(names, 1)
    assert (plan.follow, plan.taken, plan.target_timeline()) == (1, [2], "'current'")
    # from a base backup of timeline 2 (history there), leftovers of 4 above a real 3
    names = ["00000002.history", "00000003.history", SEG.format(4)]
    plan = timelines.plan(names, 2)
    assert (plan.follow, plan.taken, plan.target_timeline()) == (3, [4], "'3'")


def test_a_gap_of_history_files_stops_the_followed_timeline_like_postgresql() -> None:
    """A history file of 3 with none of 2 (a promote killed between the two): not
    followed, as PostgreSQL's probe would not; 2 and 3 are taken."""
    plan = timelines.plan(["00000003.history", SEG.format(3)], 1)
    assert (plan.follow, plan.taken) == (1, [2, 3])


def test_foreign_names_are_not_timelines_and_a_hostile_one_is_refused() -> None:
    names = ["notes.txt", "0000000Z0000000000000001", "00000009.history.bak", ".tmp"]
    assert timelines.plan(names, 1).taken == []
    with pytest.raises(Refused, match="unaccounted for"):
        timelines.plan(["FFFFFFFF0000000000000001"], 1)


def test_gaps_below_a_promoted_timeline_are_the_numbers_without_history_files() -> None:
    names = ["00000002.history", SEG.format(3), "00000005.history"]
    assert timelines.gaps(names, 5) == [3, 4]
    assert timelines.gaps(names, 2) == []
    for tli in (2, 3):  # comments only: PostgreSQL never follows one
        assert all(x.startswith("#") for x in timelines.tombstone(tli).splitlines())
        assert all(x.startswith("#") for x in timelines.placeholder(tli).splitlines())
