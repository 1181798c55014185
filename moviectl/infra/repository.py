"""``MovieRepository``: the movie table's operations over one Session."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from moviectl.infra.models import Movie, MovieCreate


class MovieRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def create(self, data: MovieCreate | dict[str, Any]) -> Movie:
        """Validate and insert one movie; returns it with its server-made id and timestamps."""
        fields = MovieCreate.model_validate(data).model_dump()
        movie = Movie(**fields)
        self.session.add(movie)
        self.session.flush()
        self.session.refresh(movie)
        return movie

    def get(self, movie_id: uuid.UUID) -> Movie | None:
        return self.session.get(Movie, movie_id)

    def list(self, *, offset: int = 0, limit: int = 50) -> Sequence[Movie]:
        """A page of movies in a stable order (title, then id)."""
        if offset < 0 or limit < 1:
            raise ValueError("offset must be >= 0 and limit >= 1")
        stmt = select(Movie).order_by(col(Movie.title), col(Movie.id)).offset(offset).limit(limit)
        return self.session.exec(stmt).all()

    def update(self, movie_id: uuid.UUID, **changes: Any) -> Movie | None:
        """Apply validated changes; the trigger maintains ``updated_at``."""
        movie = self.get(movie_id)
        if movie is None:
            return None
        current = movie.model_dump(include={"title", "year", "genre", "rating"})
        merged = MovieCreate.model_validate({**current, **changes})
        for key in changes:
            setattr(movie, key, getattr(merged, key))
        self.session.add(movie)
        self.session.flush()
        self.session.refresh(movie)
        return movie

    def delete(self, movie_id: uuid.UUID) -> bool:
        movie = self.get(movie_id)
        if movie is None:
            return False
        self.session.delete(movie)
        self.session.flush()
        return True

    def count(self) -> int:
        return int(self.session.exec(select(func.count()).select_from(Movie)).one())
