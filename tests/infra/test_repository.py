from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from moviectl.infra.models import Movie
from moviectl.infra.repository import MovieRepository


@pytest.fixture
def committing_session(movie_engine):
    """Tier 2: real commits (the updated_at trigger uses now(), constant within a
    transaction, so this cannot run inside tier 1's rolled-back one)."""
    from sqlmodel import Session

    with Session(movie_engine) as session:
        yield session


def test_crud_round_trip(committing_session):
    movie_session = committing_session
    repo = MovieRepository(movie_session)
    m = repo.create({"title": "Alien", "year": 1979, "genre": "Horror", "rating": Decimal("8.5")})
    assert m.id is not None and m.created_at is not None and m.updated_at == m.created_at
    movie_session.commit()
    assert repo.get(m.id).title == "Alien"
    assert repo.count() == 1
    updated = repo.update(m.id, rating=Decimal("9.0"))
    movie_session.commit()
    movie_session.refresh(updated)
    assert updated.rating == Decimal("9.0")
    assert updated.updated_at > updated.created_at  # the trigger maintains updated_at
    assert repo.delete(m.id) is True
    assert repo.get(m.id) is None and repo.delete(m.id) is False
    assert repo.update(m.id, title="x") is None


def test_paging_is_stable(movie_session):
    repo = MovieRepository(movie_session)
    for i in range(7):
        repo.create({"title": f"Film {i}", "year": 2000 + i, "genre": "Drama"})
    pages = [[m.title for m in repo.list(offset=o, limit=3)] for o in (0, 3, 6)]
    assert pages == [["Film 0", "Film 1", "Film 2"], ["Film 3", "Film 4", "Film 5"], ["Film 6"]]
    with pytest.raises(ValueError):
        repo.list(limit=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"title": "", "year": 2000, "genre": "Drama"},
        {"title": "X", "year": 1700, "genre": "Drama"},
        {"title": "X", "year": 2000, "genre": "Drama", "rating": 11},
        {"title": "X", "year": "soon", "genre": "Drama"},
    ],
)
def test_validation_rejects_bad_rows(movie_session, bad):
    with pytest.raises(ValidationError):
        MovieRepository(movie_session).create(bad)


@pytest.mark.parametrize(
    "values",
    ["('   ', 2000, 'Drama', NULL)", "('X', 1700, 'Drama', NULL)", "('X', 2000, 'Drama', 10.5)"],
)
def test_database_checks_hold_without_the_orm(movie_session, values):
    with pytest.raises(IntegrityError):
        movie_session.execute(
            sa.text(f"INSERT INTO movies (title, year, genre, rating) VALUES {values}")
        )
        movie_session.flush()


def test_schema_uses_postgres_types(movie_connection):
    insp = sa.inspect(movie_connection)
    cols = {c["name"]: c for c in insp.get_columns("movies")}
    assert str(cols["id"]["type"]) == "UUID"
    assert "gen_random_uuid" in cols["id"]["default"]
    assert cols["created_at"]["type"].timezone is True
    assert cols["rating"]["nullable"] is True and cols["title"]["nullable"] is False
    assert {i["name"] for i in insp.get_indexes("movies")} >= {
        "ix_movies_title",
        "ix_movies_year_genre",
    }
    assert Movie.__tablename__ == "movies"
