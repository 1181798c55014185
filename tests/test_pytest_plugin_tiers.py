"""Tier 1 isolation: 60 tests insert the very same row (a fixed primary key) into the
shared per-worker database; each sees only its own, in any order, under -n auto."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from moviectl.infra.models import Movie

FIXED = uuid.UUID("00000000-0000-0000-0000-0000000000aa")


@pytest.mark.parametrize("n", range(60))
def test_the_same_row_in_every_test(movie_session, n):
    movie_session.add(Movie(id=FIXED, title=f"Take {n}", year=2000, genre="Drama"))
    movie_session.commit()  # the code under test may commit: a savepoint, not a commit
    assert movie_session.get(Movie, FIXED).title == f"Take {n}"
    assert movie_session.execute(text("SELECT count(*) FROM movies")).scalar() == 1


def test_a_connection_variant_rolls_back_too(movie_connection):
    movie_connection.execute(
        text("INSERT INTO movies (id, title, year, genre) VALUES (:id, 'x', 2000, 'Drama')"),
        {"id": FIXED},
    )
    assert movie_connection.execute(text("SELECT count(*) FROM movies")).scalar() == 1


def _titles(session) -> list[str]:
    return list(session.execute(text("SELECT title FROM movies ORDER BY title")).scalars())


def test_a_session_rollback_goes_back_to_the_last_commit_not_further(movie_session):
    """Commits are savepoints: a failed flush and a rollback keep what was committed."""
    from sqlalchemy.exc import IntegrityError

    movie_session.add(Movie(id=FIXED, title="A", year=2000, genre="Drama"))
    movie_session.commit()
    movie_session.add(Movie(id=FIXED, title="dup", year=2000, genre="Drama"))
    with pytest.raises(IntegrityError):
        movie_session.flush()
    movie_session.rollback()
    assert _titles(movie_session) == ["A"]
    movie_session.add(Movie(title="B", year=2001, genre="Drama"))
    movie_session.commit()
    movie_session.add(Movie(title="C", year=2002, genre="Drama"))
    movie_session.flush()
    movie_session.rollback()
    assert _titles(movie_session) == ["A", "B"]
    movie_session.rollback()  # nothing since: stays at the last commit
    assert _titles(movie_session) == ["A", "B"]


def test_a_rollback_before_any_commit_goes_back_to_the_start_and_commits_stay_savepoints(
    movie_session,
):
    movie_session.add(Movie(title="gone", year=2000, genre="Drama"))
    movie_session.flush()
    movie_session.rollback()
    assert _titles(movie_session) == []
    movie_session.add(Movie(title="kept", year=2000, genre="Drama"))
    movie_session.commit()  # still a savepoint: rolled back after the test (next test sees 0)
    movie_session.rollback()
    assert _titles(movie_session) == ["kept"]


def test_a_tests_own_savepoint_works_inside(movie_session):
    movie_session.add(Movie(title="outer", year=2000, genre="Drama"))
    with movie_session.begin_nested() as nested:
        movie_session.add(Movie(title="inner", year=2000, genre="Drama"))
        movie_session.flush()
        nested.rollback()
    movie_session.commit()
    assert _titles(movie_session) == ["outer"]


@pytest.mark.parametrize("n", range(3))
def test_nothing_leaks_between_tests(movie_session, n):
    assert _titles(movie_session) == []
    movie_session.add(Movie(title=f"t{n}", year=2000, genre="Drama"))
    movie_session.commit()
