"""movies table, its checks, indexes and the updated_at trigger

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "movies",
        sa.Column(
            "id",
            postgresql.UUID(as_uuid=True),
            server_default=sa.text("gen_random_uuid()"),
            primary_key=True,
        ),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("year", sa.SmallInteger(), nullable=False),
        sa.Column("genre", sa.String(40), nullable=False),
        sa.Column("rating", sa.Numeric(3, 1), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint("length(btrim(title)) > 0", name="ck_movies_title_not_blank"),
        sa.CheckConstraint("year BETWEEN 1888 AND 2100", name="ck_movies_year_range"),
        sa.CheckConstraint("rating >= 0 AND rating <= 10", name="ck_movies_rating_range"),
    )
    op.create_index("ix_movies_title", "movies", ["title"])
    op.create_index("ix_movies_year_genre", "movies", ["year", "genre"])
    op.execute(
        """
        CREATE FUNCTION moviectl_set_updated_at() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            NEW.updated_at := now();
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER movies_set_updated_at BEFORE UPDATE ON movies "
        "FOR EACH ROW EXECUTE FUNCTION moviectl_set_updated_at()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS movies_set_updated_at ON movies")
    op.drop_index("ix_movies_year_genre", table_name="movies")
    op.drop_index("ix_movies_title", table_name="movies")
    op.drop_table("movies")
    op.execute("DROP FUNCTION IF EXISTS moviectl_set_updated_at()")
