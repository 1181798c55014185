"""Migrations run with lock timeouts: a held lock makes them give up, naming the blocker."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from moviectl.core.migrations.scripts import script_location
from tests.conftest import ROOT, subprocess_env, wait_for

ADD_DIRECTOR = '''"""movies.director

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("movies", sa.Column("director", sa.Text()))


def downgrade() -> None:
    op.drop_column("movies", "director")
'''


@pytest.fixture
def with_0003(tmp_path: Path) -> Path:
    """A copy of the project's migrations plus 0003 (adds movies.director)."""
    copy = tmp_path / "alembic"
    shutil.copytree(script_location(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "0003_director.py").write_text(ADD_DIRECTOR)
    return copy


def _state(url: str) -> tuple[str, bool]:
    with psycopg.connect(url) as c:
        rev = c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        col = c.execute(
            "SELECT 1 FROM information_schema.columns "
            "WHERE table_name = 'movies' AND column_name = 'director'"
        ).fetchone()
        return rev, col is not None


def _waiting_migration(url: str) -> bool:
    with psycopg.connect(url) as c:
        return bool(
            c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = 'moviectl migrate' "
                "AND wait_event_type = 'Lock'"
            ).fetchone()
        )


@pytest.mark.timeout(90)
def test_a_held_lock_times_out_names_the_blocker_and_others_keep_running(
    movie_db_url: str, with_0003: Path
) -> None:
    blocker = psycopg.connect(movie_db_url)  # an open transaction that read movies
    blocker.execute("SELECT count(*) FROM movies")
    blocker_pid = blocker.info.backend_pid
    env = subprocess_env(
        MOVIE_DATABASE_URL=movie_db_url,
        MOVIE_MIGRATIONS_DIR=str(with_0003),
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="1",
        MOVIE_MIGRATE_LOCK_RETRIES="2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", "migrate"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # While the migration queues for its lock, another session's query is not stuck
        # behind it for longer than the lock timeout: it gets its answer.
        assert wait_for(lambda: _waiting_migration(movie_db_url), timeout=30)
        answers: list[object] = []

        def reader() -> None:
            with psycopg.connect(movie_db_url) as c:
                c.execute("SET statement_timeout = '30s'")
                answers.append(c.execute("SELECT count(*) FROM movies").fetchone())

        t = threading.Thread(target=reader)
        t.start()
        t.join(timeout=40)
        assert answers, "a reader stayed queued behind the waiting migration"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 7, (out, err)
    assert "gave up after 3 tries" in err and f"pid {blocker_pid}" in err, err
    assert "SELECT count(*) FROM movies" in err and "in a transaction since" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    blocker.rollback()
    assert _state(movie_db_url) == ("0002", False)  # nothing half-applied

    # The blocker gone, the same command goes through.
    r = subprocess.run(
        [sys.executable, "-m", "moviectl", "migrate"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    blocker.close()
    assert r.returncode == 0, r.stderr
    assert _state(movie_db_url) == ("0003", True)


def test_a_lock_released_during_the_retries_lets_the_migration_through(
    movie_db_url: str, with_0003: Path
) -> None:
    blocker = psycopg.connect(movie_db_url)
    blocker.execute("SELECT count(*) FROM movies")
    env = subprocess_env(
        MOVIE_DATABASE_URL=movie_db_url,
        MOVIE_MIGRATIONS_DIR=str(with_0003),
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0.5",
        MOVIE_MIGRATE_LOCK_RETRIES="10",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", "--json", "migrate"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: _waiting_migration(movie_db_url), timeout=30)
        blocker.rollback()  # the forgotten transaction ends
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        blocker.close()
    assert proc.returncode == 0, (out, err)
    assert '"0003"' in out
    assert _state(movie_db_url) == ("0003", True)


def test_the_timeouts_are_set_on_the_migrating_session(cli, movie_db_url: str, with_0003: Path):
    """The settings reach the server: a migration that runs SHOW sees them."""
    probe = with_0003 / "versions" / "0003_director.py"
    probe.write_text(
        ADD_DIRECTOR.replace(
            '    op.add_column("movies", sa.Column("director", sa.Text()))',
            "    lock = op.get_bind().exec_driver_sql('SHOW lock_timeout').scalar()\n"
            "    stmt = op.get_bind().exec_driver_sql('SHOW statement_timeout').scalar()\n"
            "    op.execute(f\"COMMENT ON TABLE movies IS '{lock} {stmt}'\")\n"
            '    op.add_column("movies", sa.Column("director", sa.Text()))',
        )
    )
    r = cli(
        "migrate",
        MOVIE_MIGRATIONS_DIR=str(with_0003),
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="2.5",
        MOVIE_MIGRATE_STATEMENT_TIMEOUT="600",
    )
    assert r.exit_code == 0, r.output
    with psycopg.connect(movie_db_url) as c:
        comment = c.execute("SELECT obj_description('movies'::regclass)").fetchone()[0]
    assert comment == "2500ms 10min"
