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
