"""The clone pool on a real server: bounded, quick to give the first clone, quick to close."""

from __future__ import annotations

import time
from typing import Any

import pytest

from moviectl.core import testdb
from moviectl.core.testdb_pool import ClonePool, prune_dead_pools
from moviectl.infra import admin
from moviectl.infra.engine import connect
from tests.conftest import dead_pid, wait_for


def _marked(target) -> dict[str, str]:
    """Every moviectl test database on the server: name -> owner mark."""
    with connect(target) as conn:
        rows = admin.databases_named_like(conn, testdb.TEST_PREFIX)
    return {r["name"]: str((r["mark"] or {}).get("owner")) for r in rows}


@pytest.fixture
def pool_factory(moviectl_settings, moviectl_admin_target, moviectl_template):
    pools = []

    def make(size: int, expected: int | None = None, **more: Any) -> ClonePool:
        pool = ClonePool(
            moviectl_settings, moviectl_admin_target, moviectl_template, size, expected, **more
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
        assert pool.stopped(30)
        there = set(_marked(moviectl_admin_target))
        leftovers = [n for n in pool.left_behind if n in there]
        if leftovers:
            testdb.drop(moviectl_settings, leftovers, target=moviectl_admin_target)


def test_the_first_take_returns_once_one_clone_exists(pool_factory):
    pool = pool_factory(size=8)
    db = pool.take(timeout=60)
    assert pool.made <= 2  # not the 8 a full pool holds
    pool.give_back(db.name)


@pytest.mark.parametrize("makers", [1, 2])
def test_short_tests_never_pile_up_given_back_clones(pool_factory, makers):
    """Takes and gives back as fast as it can: the clones alive never exceed the pool's
    size + the one in use, and close() finds nothing left to drop, with one maker or two
    making clones at once."""
    pool = pool_factory(size=3, makers=makers)
    for _ in range(40):
        pool.give_back(pool.take(timeout=60).name)
    assert pool.peak <= 3 + 1
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 10
    assert pool.left_behind == [] and pool.dropped == pool.made


def test_close_is_bounded_and_leaves_the_rest_marked_for_a_prune(
    pool_factory, moviectl_admin_target
):
    pool = pool_factory(size=2)
    taken = [pool.take(timeout=60) for _ in range(30)]  # clones in use do not count
    for db in taken:
        pool.give_back(db.name)
    started = time.monotonic()
    pool.close(wait=0.0)
    assert time.monotonic() - started < 1.0  # at most the drop under way finishes
    # how many the dropper took before close depends on the machine's speed: whatever is
    # left is this run's, marked for a prune
    assert pool.stopped(30)
    there = _marked(moviectl_admin_target)
    for db in taken:  # each one is gone, or there with this run's pool mark (prune's cue)
        assert db.name not in there or there[db.name] == testdb.pool_owner_tag()
    assert {db.name for db in taken} & set(there) <= set(pool.left_behind)


def test_a_take_after_close_fails_at_once(pool_factory):
    pool = pool_factory(size=1)
    pool.close()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="closed"):
        pool.take(timeout=60)
    assert time.monotonic() - started < 5


def test_the_bound_holds_while_the_dropper_is_behind(pool_factory, moviectl_admin_target):
    """Given back faster than dropped: the maker waits for room instead of running ahead."""
    pool = pool_factory(size=2)
    taken = [pool.take(timeout=60) for _ in range(6)]
    for db in taken:
        pool.give_back(db.name)
    assert wait_for(lambda: pool.dropped >= 6, 60)
    assert pool.peak <= 6 + 2
    assert wait_for(lambda: pool.alive <= 2, 30)


def test_two_makers_make_no_more_than_the_run_expects(pool_factory):
    """With two clones in flight at once, the pool still makes no more ahead than the run
    will take: 5 expected, 5 taken, 5 made."""
    pool = pool_factory(size=4, expected=5, makers=2)
    for _ in range(5):
        pool.give_back(pool.take(timeout=60).name)
    pool.close()
    assert pool.made == 5 and pool.dropped == 5


def test_a_killed_runs_clones_are_pruned_beside_the_first_clone(
    pool_factory, moviectl_settings, moviectl_admin_target
):
    """What a killed run's pool left (its pid gone from this host) is dropped by the new
    pool's dropper, not before the first test gets its database; this run's are kept."""
    dead = testdb.pool_owner_tag().rsplit(" pid ", 1)[0] + f" pid {dead_pid()}"
    left = testdb.create(moviectl_settings, target=moviectl_admin_target, owner=dead).name
    pool = pool_factory(
        size=2,
        expected=1,
        prune=lambda: prune_dead_pools(moviectl_settings, moviectl_admin_target),
    )
    db = pool.take(timeout=60)
    assert wait_for(lambda: left not in _marked(moviectl_admin_target), timeout=30)
    assert db.name in _marked(moviectl_admin_target)
    pool.give_back(db.name)
