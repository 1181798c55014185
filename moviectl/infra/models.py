"""The movie schema (SQLModel over SQLAlchemy 2). Migrations in ``alembic/`` create it.

moviectl's tables live on a registry and ``MetaData`` of their own (``MoviectlModel``),
not on the global ``SQLModel.metadata``: a service can define its own ``movies`` model
on ``SQLModel`` and still import moviectl's engine factory, settings and models beside
it. Autogenerate and `migrate check` compare this ``metadata``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from moviectl.infra.movie_fields import GENRES, MAX_YEAR, MIN_YEAR

__all__ = [
    "GENRES",
    "MAX_YEAR",
    "MIN_YEAR",
    "Movie",
    "MovieCreate",
    "MoviectlModel",
    "SeedRun",
    "metadata",
]


class MoviectlModel(SQLModel, registry=registry()):
    """The base of moviectl's models: its own registry, so its own ``MetaData``."""


metadata = MoviectlModel.metadata


class MovieBase(MoviectlModel):
    """The fields a caller supplies; validated (used by seed files and the repository)."""

    title: str = Field(min_length=1, max_length=300)
    year: int = Field(ge=MIN_YEAR, le=MAX_YEAR)
    genre: str = Field(min_length=1, max_length=40)
    rating: Decimal | None = Field(default=None, ge=0, le=10, max_digits=3, decimal_places=1)


class MovieCreate(MovieBase):
    pass


class Movie(MovieBase, table=True):
    __tablename__ = "movies"
    __table_args__ = (
        sa.CheckConstraint("length(btrim(title)) > 0", name="ck_movies_title_not_blank"),
        sa.CheckConstraint(f"year BETWEEN {MIN_YEAR} AND {MAX_YEAR}", name="ck_movies_year_range"),
        sa.CheckConstraint("rating >= 0 AND rating <= 10", name="ck_movies_rating_range"),
        sa.Index("ix_movies_title", "title"),
        sa.Index("ix_movies_year_genre", "year", "genre"),
        # Triggers are not SQLAlchemy objects: `migrate check` compares these with the
        # database (name: the definition as pg_get_triggerdef writes it after the name).
        {
            "info": {
                "triggers": {
                    "movies_set_updated_at": "BEFORE UPDATE ON movies FOR EACH ROW "
                    "EXECUTE FUNCTION moviectl_set_updated_at()"
                }
            }
        },
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=sa.Column(
            UUID(as_uuid=True), primary_key=True, server_default=sa.text("gen_random_uuid()")
        ),
    )
    title: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    year: int = Field(sa_column=sa.Column(sa.SmallInteger, nullable=False))
    genre: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    rating: Decimal | None = Field(default=None, sa_column=sa.Column(sa.Numeric(3, 1)))
    created_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    updated_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


class SeedRun(MoviectlModel, table=True):
    """The seed ledger: one row per `moviectl seed` run."""

    __tablename__ = "seed_runs"
    __table_args__ = (
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="ck_seed_runs_status"),
        sa.Index("ix_seed_runs_key", "key"),
    )

    id: int | None = Field(
        default=None, sa_column=sa.Column(sa.BigInteger, sa.Identity(), primary_key=True)
    )
    key: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    source: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    file_name: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    sha256: str | None = Field(default=None, sa_column=sa.Column(sa.String(64)))
    requested: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False))
    random_seed: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger))
    rows_inserted: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    method: str | None = Field(default=None, sa_column=sa.Column(sa.String(10)))
    status: str = Field(sa_column=sa.Column(sa.String(10), nullable=False))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text))
    started_at: datetime | None = Field(
        default=None,
        sa_column=sa.Column(
            sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=sa.Column(sa.DateTime(timezone=True))
    )
