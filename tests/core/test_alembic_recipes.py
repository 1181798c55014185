"""Alembic's own recipes against moviectl's scripts, and models an app can share.

- "Sharing a connection" (Alembic's cookbook): ``with engine.begin() as conn:`` hands
  env.py a connection inside the caller's transaction; env.py commits nothing, the
  caller's transaction stays usable, and its commit or rollback decides.
- An Engine handed in: env.py connects and commits its own work.
- moviectl's tables on their own MetaData: a service's own ``movies`` model on
  ``SQLModel.metadata`` lives beside moviectl's models in one interpreter.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import text

from moviectl.infra.errors import LockBusy
from moviectl.infra.settings import Settings, parse_db_url
from tests.conftest import copy_migrations, run_moviectl, subprocess_env


def _config(**attributes: Any) -> Any:
    from alembic.config import Config

    from moviectl.core.migrations.scripts import script_location

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.attributes.update(attributes)
    return cfg


@pytest.fixture
def engine(empty_db_url: str, moviectl_settings: Settings) -> Iterator[Any]:
    from moviectl.infra.engine import make_engine

    eng = make_engine(moviectl_settings, target=parse_db_url(empty_db_url), pooled=False)
    yield eng
    eng.dispose()


def _tables(url: str) -> dict[str, Any]:
    """What another session sees: committed state only."""
    with psycopg.connect(url) as c:
        movies = c.execute("SELECT to_regclass('movies')::text").fetchone()[0]
        version = c.execute("SELECT to_regclass('alembic_version')::text").fetchone()[0]
        row = c.execute("SELECT version_num FROM alembic_version").fetchone() if version else None
        locks = c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]
    return {"movies": movies, "revision": row[0] if row else None, "advisory_locks": locks}


def test_cookbook_sharing_a_connection_commits_nothing_the_caller_began(
    engine, empty_db_url, movie_db_url, monkeypatch
):
    from alembic import command

    monkeypatch.setenv("MOVIE_DATABASE_URL", movie_db_url)  # the app database: untouched
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE callers_own (id int)"))
        conn.execute(text("SET LOCAL lock_timeout = '1234ms'"))
        cfg = _config(connection=conn)
        command.upgrade(cfg, "head")
        # the caller's transaction is still open and usable, and sees the migration
        assert conn.in_transaction()
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0002"
        conn.execute(
            text("INSERT INTO movies (title, year, genre) VALUES ('Alien', 1979, 'scifi')")
        )
        # the caller's own settings are as it left them (the lock wait set its own)
        assert conn.execute(text("SHOW lock_timeout")).scalar() == "1234ms"
        # nothing is committed yet: another session sees no schema
        assert _tables(empty_db_url)["movies"] is None
    after = _tables(empty_db_url)
    assert after == {"movies": "movies", "revision": "0002", "advisory_locks": 0}
    with psycopg.connect(empty_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == 1
        assert c.execute("SELECT to_regclass('callers_own')::text").fetchone()[0] == "callers_own"
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == 0


def test_the_callers_rollback_undoes_the_migration_and_frees_the_lock(engine, empty_db_url):
    from alembic import command

    with engine.connect() as conn:
        conn.begin()
        command.upgrade(_config(connection=conn), "head")
        command.downgrade(_config(connection=conn), "0001")
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        conn.rollback()
        assert not conn.in_transaction()
    assert _tables(empty_db_url) == {"movies": None, "revision": None, "advisory_locks": 0}


def test_an_engine_handed_in_is_migrated_and_committed(engine, empty_db_url):
    from alembic import command

    cfg = _config(connection=engine)
    command.upgrade(cfg, "head")
    assert _tables(empty_db_url) == {"movies": "movies", "revision": "0002", "advisory_locks": 0}
    command.downgrade(cfg, "base")
    assert _tables(empty_db_url)["movies"] is None
    command.upgrade(cfg, "0001")
    assert _tables(empty_db_url)["revision"] == "0001"


def test_a_failed_migration_leaves_the_callers_transaction_usable(
    engine, empty_db_url, tmp_path, monkeypatch
):
    """A migration that fails midway undoes itself (its savepoint), not the caller's work."""
    from alembic import command

    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_broken.py").write_text(
        '"""broken"""\nfrom alembic import op\n\nrevision = "0003"\ndown_revision = "0002"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        'def upgrade() -> None:\n    op.execute("SELECT 1 / 0")\n\n\n'
        "def downgrade() -> None:\n    pass\n"
    )
    monkeypatch.setenv("MOVIE_MIGRATIONS_DIR", str(scripts))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE callers_own (id int)"))
        with pytest.raises(Exception, match="division by zero"):
            command.upgrade(_config(connection=conn), "head")
        assert conn.execute(text("SELECT to_regclass('movies')")).scalar() is None
        assert conn.execute(text("SELECT count(*) FROM callers_own")).scalar() == 0
        command.upgrade(_config(connection=conn), "0002")  # still usable for more work
    assert _tables(empty_db_url) == {"movies": "movies", "revision": "0002", "advisory_locks": 0}


def test_two_callers_transactions_do_not_migrate_at_once(engine, empty_db_url):
    """The lock taken in a caller's transaction lasts until that transaction ends; a second
    migration waits at most its lock_timeout, names the holder, and its caller goes on."""
    from alembic import command

    with engine.begin() as first:
        command.upgrade(_config(connection=first), "head")
        holder = first.execute(text("SELECT pg_backend_pid()")).scalar()
        with engine.begin() as second:
            with pytest.raises(LockBusy, match=f"pid {holder}"):
                command.upgrade(_config(connection=second, lock_timeout=0.5), "head")
            assert second.execute(text("SELECT 1")).scalar() == 1
            with pytest.raises(LockBusy):  # 0: ask once, do not wait
                command.upgrade(_config(connection=second, lock_timeout=0), "head")
    with engine.begin() as third:  # the first committed: nothing left to do, no lock left
        command.upgrade(_config(connection=third, lock_timeout=0), "head")
    assert _tables(empty_db_url) == {"movies": "movies", "revision": "0002", "advisory_locks": 0}


# A service's own models on the global SQLModel.metadata (the seed's `database.py` role):
# its own `movies` model over the same table, and a table of its own, imported before and
# after moviectl's models, engine factory and settings.
SERVICE = """
import json, sys, uuid
from sqlmodel import Field, Session, SQLModel, select

def service_models():
    class Movie(SQLModel, table=True):
        __tablename__ = "movies"
        id: uuid.UUID | None = Field(default=None, primary_key=True)
        title: str
        year: int
        genre: str

    class Review(SQLModel, table=True):
        __tablename__ = "reviews"
        id: int | None = Field(default=None, primary_key=True)
        movie_title: str
        stars: int
    return Movie, Review

first = sys.argv[1]
if first == "service":
    Movie, Review = service_models()
from moviectl.infra.engine import make_engine
from moviectl.infra.models import Movie as MoviectlMovie, SeedRun, metadata
from moviectl.infra.settings import load_settings
if first == "moviectl":
    Movie, Review = service_models()

engine = make_engine(load_settings(use_dotenv=False), pooled=False)
SQLModel.metadata.create_all(engine)  # the service's reviews; movies exists already
with Session(engine) as s:
    s.add(MoviectlMovie(title="Alien", year=1979, genre="scifi"))
    s.add(Review(movie_title="Alien", stars=5))
    s.commit()
    out = {
        "service_tables": sorted(SQLModel.metadata.tables),
        "moviectl_tables": sorted(metadata.tables),
        "service_reads": [(m.title, m.year) for m in s.exec(select(Movie))],
        "reviews": [r.stars for r in s.exec(select(Review))],
        "seed_runs_on_own_metadata": SeedRun.__table__.metadata is metadata,
    }
print(json.dumps(out))
engine.dispose()
"""


@pytest.mark.parametrize("first", ["service", "moviectl"])
def test_a_service_defines_its_own_movies_model_beside_moviectls(movie_db_url, first):
    env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url)
    r = run_moviectl(env, first, python=SERVICE, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "already defined" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc == {
        "service_tables": ["movies", "reviews"],
        "moviectl_tables": ["movies", "seed_runs"],
        "service_reads": [["Alien", 1979]],
        "reviews": [5],
        "seed_runs_on_own_metadata": True,
    }


CHECK_WITH_A_SERVICE_MODEL = """
import sys
from sqlmodel import Field, SQLModel

class Movie(SQLModel, table=True):  # the service's models: not moviectl's to compare
    __tablename__ = "movies"
    id: int | None = Field(default=None, primary_key=True)
    director: str

class Review(SQLModel, table=True):
    __tablename__ = "reviews"
    id: int | None = Field(default=None, primary_key=True)
    stars: int

from moviectl.cli.entry import main
sys.argv = ["moviectl", *sys.argv[1:]]
main()
"""


def test_migrate_check_compares_moviectls_metadata_only(movie_db_url):
    """A service's table on SQLModel.metadata, imported into the same process, is not
    something `migrate check` reports as missing from the database."""
    env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url)
    r = run_moviectl(env, "--json", "migrate", "check", python=CHECK_WITH_A_SERVICE_MODEL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reviews" not in r.stdout and "director" not in r.stdout


def test_models_module_keeps_its_tables_off_the_global_metadata():
    """Checked in a fresh interpreter: importing moviectl's models adds nothing to
    SQLModel.metadata (another test module may have put its own tables there)."""
    import subprocess

    code = (
        "from sqlmodel import SQLModel\n"
        "import moviectl.infra.models as m\n"
        "print(sorted(SQLModel.metadata.tables), sorted(m.metadata.tables))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent,
    )
    assert res.stdout.strip() == "[] ['movies', 'seed_runs']", res.stderr
