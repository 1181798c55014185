"""Migrations run with lock timeouts: a held lock makes them give up, naming the blocker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY
from tests.conftest import (
    ROOT,
    copy_migrations,
    run_moviectl,
    start_moviectl,
    subprocess_env,
    wait_for,
)

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
    copy = copy_migrations(tmp_path)
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


def _migrate_env(url: str, scripts: Path, **settings: str) -> dict[str, str]:
    return subprocess_env(MOVIE_DATABASE_URL=url, MOVIE_MIGRATIONS_DIR=str(scripts), **settings)


@contextmanager
def _queued_for_a_lock(url: str, env: dict[str, str], *args: str) -> Iterator[Any]:
    """``moviectl ARGS``, once its migration waits for a table lock; killed on the way out
    if it still runs."""
    proc = start_moviectl(env, *args)
    try:
        assert wait_for(lambda: _waiting_migration(url), timeout=30)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.timeout(90)
def test_a_held_lock_times_out_names_the_blocker_and_others_keep_running(
    movie_db_url: str, with_0003: Path
) -> None:
    blocker = psycopg.connect(movie_db_url)  # an open transaction that read movies
    blocker.execute("SELECT count(*) FROM movies")
    blocker_pid = blocker.info.backend_pid
    env = _migrate_env(
        movie_db_url,
        with_0003,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="1",
        MOVIE_MIGRATE_LOCK_RETRIES="2",
    )
    with _queued_for_a_lock(movie_db_url, env, "migrate") as proc:
        # While the migration queues for its lock, another session's query is not stuck
        # behind it for longer than the lock timeout: it gets its answer.
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
    assert proc.returncode == 7, (out, err)
    assert "gave up after 3 tries" in err and f"pid {blocker_pid}" in err, err
    assert "SELECT count(*) FROM movies" in err and "in a transaction since" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err
    blocker.rollback()
    assert _state(movie_db_url) == ("0002", False)  # nothing half-applied

    # The blocker gone, the same command goes through.
    r = run_moviectl(env, "migrate")
    blocker.close()
    assert r.returncode == 0, r.stderr
    assert _state(movie_db_url) == ("0003", True)


def test_a_lock_released_during_the_retries_lets_the_migration_through(
    movie_db_url: str, with_0003: Path
) -> None:
    blocker = psycopg.connect(movie_db_url)
    blocker.execute("SELECT count(*) FROM movies")
    env = _migrate_env(
        movie_db_url,
        with_0003,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0.5",
        MOVIE_MIGRATE_LOCK_RETRIES="10",
    )
    try:
        with _queued_for_a_lock(movie_db_url, env, "--json", "migrate") as proc:
            blocker.rollback()  # the forgotten transaction ends
            out, err = proc.communicate(timeout=60)
    finally:
        blocker.close()
    assert proc.returncode == 0, (out, err)
    assert '"0003"' in out
    assert _state(movie_db_url) == ("0003", True)


@pytest.mark.parametrize(
    ("lock", "stmt", "shown"),
    [
        ("2.5", "600", "2500ms 10min"),
        # not 0 ms (which would mean no limit at all), nor an error from the server
        ("0.0004", "2147483", "1ms 2147483s"),
        ("0", "0", "0 0"),
    ],
)
def test_the_timeouts_are_set_on_the_migrating_session(
    cli, movie_db_url: str, with_0003: Path, lock: str, stmt: str, shown: str
) -> None:
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
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT=lock,
        MOVIE_MIGRATE_STATEMENT_TIMEOUT=stmt,
    )
    assert r.exit_code == 0, r.output
    with psycopg.connect(movie_db_url) as c:
        comment = c.execute("SELECT obj_description('movies'::regclass)").fetchone()[0]
    assert comment == shown


def _script(rev: str, down: str, upgrade: str, downgrade: str = "    pass") -> str:
    return (
        f'"""{rev}"""\n\nimport sqlalchemy as sa  # noqa: F401\nfrom alembic import op\n\n'
        f'revision = "{rev}"\ndown_revision = "{down}"\nbranch_labels = None\n'
        f"depends_on = None\n\n\ndef upgrade() -> None:\n{upgrade}\n\n\n"
        f"def downgrade() -> None:\n{downgrade}\n"
    )


CONCURRENT_INDEX = _script(
    "0003",
    "0002",
    "    with op.get_context().autocommit_block():\n"
    '        op.create_index("ix_movies_genre", "movies", ["genre"], postgresql_concurrently=True)\n'
    "    lock = op.get_bind().exec_driver_sql('SHOW lock_timeout').scalar()\n"
    "    op.execute(f\"COMMENT ON TABLE movies IS '{lock}'\")",
    "    with op.get_context().autocommit_block():\n"
    '        op.drop_index("ix_movies_genre", table_name="movies", postgresql_concurrently=True)',
)


def _index_valid(url: str, name: str) -> bool | None:
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", (name,)
        ).fetchone()
        return None if row is None else bool(row[0])


@pytest.mark.timeout(90)
def test_a_concurrent_index_in_an_autocommit_block_waits_for_a_writer_instead_of_failing(
    cli, movie_db_url: str, tmp_path: Path
) -> None:
    """CONCURRENTLY blocks nobody while it waits: no lock timeout, no INVALID index left.

    Before, any autocommit_block() crashed the run (AssertionError), and a build cut by the
    lock timeout left an INVALID index that made every retry fail with "already exists".
    """
    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_genre_index.py").write_text(CONCURRENT_INDEX)
    writer = psycopg.connect(movie_db_url)  # a transaction that wrote to movies, still open
    writer.execute("INSERT INTO movies (title, year, genre) VALUES ('W', 2000, 'drama')")
    env = _migrate_env(
        movie_db_url,
        scripts,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0.3",
        MOVIE_MIGRATE_LOCK_RETRIES="0",
    )
    try:
        with _queued_for_a_lock(movie_db_url, env, "--json", "migrate") as proc:
            # many lock timeouts later, it still waits (before: failed after 0.3 s) ...
            assert not wait_for(lambda: proc.poll() is not None, timeout=2)
            with psycopg.connect(movie_db_url) as other:  # ... and writers are not queued
                other.execute("SET statement_timeout = '10s'")
                other.execute("UPDATE movies SET rating = rating")
            writer.rollback()
            out, err = proc.communicate(timeout=60)
    finally:
        writer.close()
    assert proc.returncode == 0, (out, err)
    assert _index_valid(movie_db_url, "ix_movies_genre") is True
    with psycopg.connect(movie_db_url) as c:  # the lock timeout is back after the build
        assert c.execute("SELECT obj_description('movies'::regclass)").fetchone()[0] == "300ms"

    r = cli("migrate", "down", "--to", "0002", "--yes", MOVIE_MIGRATIONS_DIR=str(scripts))
    assert r.exit_code == 0, r.output
    assert _index_valid(movie_db_url, "ix_movies_genre") is None


@pytest.mark.timeout(90)
def test_a_retry_resumes_after_the_last_migration_that_committed(
    movie_db_url: str, with_0003: Path
) -> None:
    """Each migration commits on its own: a lock timeout in 0004 keeps 0003, the retry
    applies 0004 only, and the report still lists both."""
    (with_0003 / "versions" / "0004_seed_note.py").write_text(
        _script(
            "0004",
            "0003",
            '    op.add_column("seed_runs", sa.Column("note", sa.Text()))',
            '    op.drop_column("seed_runs", "note")',
        )
    )
    blocker = psycopg.connect(movie_db_url)  # holds seed_runs only: 0003 goes through
    blocker.execute("SELECT count(*) FROM seed_runs")
    env = _migrate_env(
        movie_db_url,
        with_0003,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0.3",
        MOVIE_MIGRATE_LOCK_RETRIES="10",
    )
    try:
        with _queued_for_a_lock(movie_db_url, env, "--json", "migrate") as proc:
            assert wait_for(lambda: _state(movie_db_url) == ("0003", True), timeout=30)
            blocker.rollback()
            out, err = proc.communicate(timeout=60)
    finally:
        blocker.close()
    assert proc.returncode == 0, (out, err)
    doc = json.loads(out)
    assert doc["from_revision"] == "0002" and doc["to_revision"] == "0004"
    assert [s["revision"] for s in doc["steps"]] == ["0003", "0004"], doc


SLOW = ADD_DIRECTOR.replace(
    '    op.add_column("movies", sa.Column("director", sa.Text()))',
    '    op.add_column("movies", sa.Column("director", sa.Text()))\n'
    '    op.execute("SELECT pg_sleep(5)")',
)


def test_a_statement_timeout_is_one_clear_line_and_nothing_is_applied(
    movie_db_url: str, with_0003: Path, tmp_path: Path
) -> None:
    (with_0003 / "versions" / "0003_director.py").write_text(SLOW)
    env = _migrate_env(movie_db_url, with_0003, MOVIE_MIGRATE_STATEMENT_TIMEOUT="0.2")
    r = run_moviectl(env, "--json", "migrate")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)  # the whole stdout: one document
    assert "MOVIE_MIGRATE_STATEMENT_TIMEOUT (0.2 s)" in doc["message"], doc
    assert "SELECT pg_sleep(5)" in doc["message"] and "rolled back" in doc["message"]
    assert "MOVIE_MIGRATE_STATEMENT_TIMEOUT" in doc["hint"]
    assert _state(movie_db_url) == ("0002", False)

    # `alembic upgrade head` by hand: the same timeout, one line, no traceback
    ini = tmp_path / "alembic.ini"
    ini.write_text((ROOT / "alembic.ini").read_text().replace("%(here)s/alembic", str(with_0003)))
    r = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and "MOVIE_MIGRATE_STATEMENT_TIMEOUT" in r.stderr
    assert _state(movie_db_url) == ("0002", False)


def _backends(url: str, app: str) -> int:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
        ).fetchone()[0]


@pytest.mark.timeout(90)
def test_kill_9_while_waiting_for_a_lock_leaves_no_backend_in_the_queue(
    movie_db_url: str, with_0003: Path
) -> None:
    """Without a lock timeout (0), a killed moviectl's backend used to stay queued for the
    table lock, holding the migration lock and queueing every query that came after."""
    blocker = psycopg.connect(movie_db_url)
    blocker.execute("SELECT count(*) FROM movies")
    env = _migrate_env(movie_db_url, with_0003, MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0")
    try:
        with _queued_for_a_lock(movie_db_url, env, "migrate") as proc:
            proc.kill()
            proc.communicate(timeout=30)
            assert wait_for(lambda: _backends(movie_db_url, "moviectl migrate") == 0, timeout=15)
            with psycopg.connect(movie_db_url) as c:
                c.execute("SET statement_timeout = '10s'")
                c.execute("UPDATE movies SET rating = rating")  # not queued behind anything
                got = c.execute("SELECT pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()
                assert got == (True,)  # the migration lock went with the backend
    finally:
        blocker.rollback()
        blocker.close()
    assert _state(movie_db_url) == ("0002", False)


def test_each_migration_is_its_own_transaction_offline_as_online(cli, tmp_path: Path) -> None:
    """`migrate --sql` (and so `migrate lint`) renders what the run does: a COMMIT after each
    migration. So VALIDATE in the migration after a NOT VALID foreign key, the lint's own
    advice, is not flagged as "in the transaction that added it"."""
    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_fk.py").write_text(
        _script(
            "0003",
            "0002",
            '    op.add_column("seed_runs", sa.Column("movie_id", sa.Uuid()))\n'
            '    op.create_foreign_key("fk_seed_runs_movie", "seed_runs", "movies", '
            '["movie_id"], ["id"], postgresql_not_valid=True)',
            '    op.drop_column("seed_runs", "movie_id")',
        )
    )
    (scripts / "versions" / "0004_validate.py").write_text(
        _script(
            "0004",
            "0003",
            '    op.execute("ALTER TABLE seed_runs VALIDATE CONSTRAINT fk_seed_runs_movie")',
        )
    )
    env = {"MOVIE_MIGRATIONS_DIR": str(scripts)}
    r = cli("migrate", "--sql", **env)
    assert r.exit_code == 0, r.output
    sql = r.stdout
    assert sql.count("COMMIT;") == 4  # 0001, 0002, 0003, 0004
    assert sql.index("COMMIT;", sql.index("fk_seed_runs_movie")) < sql.index("VALIDATE")
    r = cli("--json", "migrate", "lint", "--range", "0002:head", **env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["findings"] == []
    r = cli("migrate", **env)
    assert r.exit_code == 0, r.output


def test_without_retries_it_gives_up_after_one_try(movie_db_url: str, with_0003: Path) -> None:
    blocker = psycopg.connect(movie_db_url)
    blocker.execute("SELECT count(*) FROM movies")
    pid = blocker.info.backend_pid
    env = _migrate_env(
        movie_db_url,
        with_0003,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0.2",
        MOVIE_MIGRATE_LOCK_RETRIES="0",
    )
    try:
        r = run_moviectl(env, "migrate")
    finally:
        blocker.rollback()
        blocker.close()
    assert r.returncode == 7, r.stderr
    assert "gave up after 1 try:" in r.stderr and f"pid {pid}" in r.stderr
