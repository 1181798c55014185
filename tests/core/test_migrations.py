from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from moviectl.infra.settings import parse_db_url
from tests.conftest import ROOT, run_at_once, subprocess_env


def test_migrate_from_base_to_head_and_status(cli_empty):
    r = cli_empty("migrate", "status")
    assert r.exit_code == 6, r.output
    assert "2 pending" in r.stdout and "0001" in r.stdout and "0002" in r.stdout

    r = cli_empty("--json", "migrate")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["from_revision"] is None and doc["to_revision"] == "0002"
    assert [s["revision"] for s in doc["steps"]] == ["0001", "0002"]
    assert "***" in doc["url"]

    r = cli_empty("migrate", "status", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["pending"] == []

    r = cli_empty("migrate")  # idempotent
    assert r.exit_code == 0 and "nothing to do" in r.stdout


def test_migrate_down_needs_confirmation_then_drops_schema(cli, movie_db_url):
    r = cli("migrate", "down", "--to", "base")
    assert r.exit_code == 5
    assert "confirmation" in r.stderr and "--yes" in r.stderr
    assert "Traceback" not in r.output
    with psycopg.connect(movie_db_url) as conn:  # nothing was lost
        assert conn.execute("SELECT to_regclass('movies')").fetchone()[0] == "movies"

    r = cli("migrate", "down", "--to", "base", "--yes")
    assert r.exit_code == 0, r.output
    with psycopg.connect(movie_db_url) as conn:
        assert conn.execute("SELECT to_regclass('movies')").fetchone()[0] is None
    assert cli("migrate", "status").exit_code == 6
    assert cli("migrate", "--to", "0001").exit_code == 0
    r = cli("migrate", "status", "--json")
    assert r.exit_code == 6 and [p["revision"] for p in json.loads(r.stdout)["pending"]] == ["0002"]
    r = cli("--json", "migrate", "down", "--to", "0001", "--yes")
    assert r.exit_code == 0 and json.loads(r.stdout)["direction"] == "none"
    assert cli("migrate").exit_code == 0
    assert cli("migrate", "status").exit_code == 0


def test_unknown_revision_is_a_usage_error(cli):
    for args in (("migrate", "--to", "nope"), ("migrate", "down", "--to", "nope", "--yes")):
        r = cli(*args)
        assert r.exit_code == 2, r.output
        assert "unknown revision 'nope'" in r.stderr
        assert "migrate history" in r.stderr


def test_history_marks_head_and_current(cli):
    r = cli("migrate", "history", "--json")
    assert r.exit_code == 0
    revs = json.loads(r.stdout)["revisions"]
    assert [r["revision"] for r in revs] == ["0001", "0002"]
    assert revs[-1]["is_head"] and revs[-1]["is_current"] and not revs[0]["is_current"]


def test_offline_sql_needs_no_server():
    from tests.conftest import Cli

    r = Cli({"MOVIE_DB_PORT": "1"})("migrate", "--sql")
    assert r.exit_code == 0, r.output
    assert "CREATE TABLE movies" in r.stdout
    assert "CREATE TRIGGER movies_set_updated_at" in r.stdout


DRIFTS = {
    "extra column": (
        "ALTER TABLE movies ADD COLUMN director text",
        "the database has a column movies.director that the models do not",
    ),
    "missing column": (
        "ALTER TABLE movies DROP COLUMN rating",
        "the models have a column movies.rating that the database does not",
    ),
    "type": (
        "ALTER TABLE movies ALTER COLUMN genre TYPE text",
        "column movies.genre: the database has type TEXT",
    ),
    "nullable": (
        "ALTER TABLE movies ALTER COLUMN genre DROP NOT NULL",
        "column movies.genre: the database allows NULL, the models say NOT NULL",
    ),
    "default": (
        "ALTER TABLE movies ALTER COLUMN created_at DROP DEFAULT",
        "column movies.created_at: the database's default is none",
    ),
    "index": (
        "DROP INDEX ix_movies_title",
        "the models have an index movies.ix_movies_title that the database does not",
    ),
    "unique": (
        "ALTER TABLE movies ADD CONSTRAINT uq_movies_title_year UNIQUE (title, year)",
        "the database has a unique constraint movies.uq_movies_title_year that the models do not",
    ),
    "foreign key": (
        "ALTER TABLE seed_runs ADD COLUMN movie_id uuid "
        "CONSTRAINT fk_seed_runs_movie REFERENCES movies (id)",
        "the database has a foreign key seed_runs.fk_seed_runs_movie that the models do not",
    ),
    "dropped check": (
        "ALTER TABLE movies DROP CONSTRAINT ck_movies_rating_range",
        "the models have a CHECK constraint movies.ck_movies_rating_range that the database does not",
    ),
    "changed check": (
        "ALTER TABLE movies DROP CONSTRAINT ck_movies_rating_range, "
        "ADD CONSTRAINT ck_movies_rating_range CHECK (rating >= 0 AND rating <= 5)",
        "CHECK constraint movies.ck_movies_rating_range differs",
    ),
    "extra check": (
        "ALTER TABLE movies ADD CONSTRAINT ck_extra CHECK (year > 1900) NOT VALID",
        "the database has a CHECK constraint movies.ck_extra that the models do not",
    ),
    "unvalidated check": (
        "ALTER TABLE movies DROP CONSTRAINT ck_movies_year_range, ADD CONSTRAINT "
        "ck_movies_year_range CHECK (year BETWEEN 1888 AND 2100) NOT VALID",
        "CHECK constraint movies.ck_movies_year_range is NOT VALID in the database",
    ),
    "dropped trigger": (
        "DROP TRIGGER movies_set_updated_at ON movies",
        "the models have a trigger movies.movies_set_updated_at that the database does not",
    ),
    "disabled trigger": (
        "ALTER TABLE movies DISABLE TRIGGER movies_set_updated_at",
        "trigger movies.movies_set_updated_at is disabled in the database",
    ),
    "extra trigger": (
        "CREATE TRIGGER audit BEFORE INSERT ON movies FOR EACH ROW "
        "EXECUTE FUNCTION moviectl_set_updated_at()",
        "the database has a trigger movies.audit that the models do not",
    ),
    "changed index": (  # one drift that says how, not "has" and "has not" the same name
        "DROP INDEX ix_movies_title; CREATE UNIQUE INDEX ix_movies_title ON movies (genre)",
        "index movies.ix_movies_title differs: the database has UNIQUE (genre), the models (title)",
    ),
    "column comment": (
        "COMMENT ON COLUMN movies.title IS 'the title'",
        "column movies.title: the database's comment is 'the title', the models' none",
    ),
    "table comment": (
        "COMMENT ON TABLE movies IS 'films'",
        "table movies: the database has a comment that the models do not",
    ),
    "identity": (
        "ALTER TABLE seed_runs ALTER COLUMN id DROP IDENTITY",
        "column seed_runs.id: the database's default is none, "
        "the models' GENERATED BY DEFAULT AS IDENTITY",
    ),
}


@pytest.mark.parametrize("case", sorted(DRIFTS))
def test_check_reports_each_kind_of_drift_in_plain_words(cli, movie_db_url, case):
    """Each object a migration can change, drifted by hand, is named in plain words."""
    statement, expected = DRIFTS[case]
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(statement)
    r = cli("migrate", "check", "--json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert any(expected in d for d in doc["differences"]), doc["differences"]
    assert all(d["kind"] and d["message"] for d in doc["drifts"])
    r = cli("migrate", "check")
    assert r.exit_code == 1 and expected.split(":")[0] in r.stdout, r.output
    with psycopg.connect(movie_db_url) as conn:  # the check left nothing behind
        assert conn.execute("SELECT to_regclass('pg_temp.moviectl_drift')").fetchone() == (None,)


def test_check_is_clean_on_a_migrated_database(cli):
    r = cli("migrate", "check", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["drifts"] == []
    assert "agree" in cli("migrate", "check").stdout


def test_check_never_runs_the_defaults_it_compares(cli, movie_db_url):
    """Alembic compared defaults by running them: every check advanced a sequence."""
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE s_rows")
        conn.execute(
            "ALTER TABLE seed_runs ALTER COLUMN rows_inserted SET DEFAULT nextval('s_rows')"
        )
    for _ in range(2):
        r = cli("migrate", "check", "--json")
        assert r.exit_code == 1, r.output
        assert json.loads(r.stdout)["differences"] == [
            "column seed_runs.rows_inserted: the database's default is "
            "nextval('s_rows'::regclass), the models' 0"
        ]
    with psycopg.connect(movie_db_url) as conn:
        assert conn.execute("SELECT last_value, is_called FROM s_rows").fetchone() == (1, False)
    with psycopg.connect(movie_db_url, autocommit=True) as conn:  # a function default: by text
        conn.execute("ALTER TABLE seed_runs ALTER COLUMN rows_inserted SET DEFAULT 0")
        conn.execute("ALTER TABLE movies ALTER COLUMN created_at SET DEFAULT clock_timestamp()")
    r = cli("migrate", "check", "--json")
    assert json.loads(r.stdout)["differences"] == [
        "column movies.created_at: the database's default is clock_timestamp(), the models' now()"
    ]


def test_check_a_missing_table_is_one_drift_not_one_per_check_and_trigger(cli, movie_db_url):
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE movies")
    r = cli("migrate", "check", "--json")
    assert r.exit_code == 1, r.output
    about_movies = [d for d in json.loads(r.stdout)["differences"] if "movies" in d]
    assert about_movies == ["the models have a table movies that the database does not"]


def test_check_reads_the_schema_the_tables_live_in(cli, movie_db_url):
    """Tables in another schema on the search_path (as Alembic compares them): no false
    "missing CHECK constraint" or "missing trigger", and a real drift is still seen."""
    db = parse_db_url(movie_db_url).database
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        for table in ("movies", "seed_runs", "alembic_version"):
            conn.execute(f"ALTER TABLE {table} SET SCHEMA app")
        conn.execute("ALTER FUNCTION moviectl_set_updated_at() SET SCHEMA app")
        conn.execute(f'ALTER DATABASE "{db}" SET search_path = app')
    r = cli("migrate", "check", "--json")
    assert r.exit_code == 0, r.output
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE app.movies DISABLE TRIGGER movies_set_updated_at")
    r = cli("migrate", "check", "--json")
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["differences"] == [
        "trigger movies.movies_set_updated_at is disabled in the database"
    ]


def test_check_behind_a_held_table_lock_gives_up_naming_the_holder(cli, movie_db_url):
    """It used to wait forever behind a forgotten LOCK TABLE (or a migration's ALTER)."""
    with psycopg.connect(movie_db_url, application_name="forgotten-lock") as holder:
        holder.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        r = cli("migrate", "check", "--json", MOVIE_MIGRATE_LOCK_TIMEOUT="0.5")
        waited = time.monotonic() - started
        pid = holder.info.backend_pid
        holder.rollback()
    assert r.exit_code == 7, r.output
    doc = json.loads(r.stdout)
    assert f"pid {pid} (forgotten-lock" in doc["message"] and "LOCK TABLE movies" in doc["message"]
    assert waited < 20
    assert cli("migrate", "check").exit_code == 0  # the lock gone, the check goes through


@pytest.fixture
def reader_url(movie_db_url):
    """A role that may read the tables, and nothing else: no TEMP on this database."""
    import secrets

    t = parse_db_url(movie_db_url)
    role, password = f"reader_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'REVOKE TEMP ON DATABASE "{t.database}" FROM PUBLIC')
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    yield f"postgresql://{role}:{password}@{t.host}:{t.port}/{t.database}"
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


@pytest.mark.parametrize("how", ["no TEMP privilege", "read-only transaction or hot standby"])
def test_check_without_temporary_tables_says_what_it_did_not_compare(
    cli, movie_db_url, request, how
):
    """A read-only user or a hot standby: CHECK definitions cannot be normalised. The check
    says so (it used to report "agree" in silence) and still compares names."""
    if how.startswith("no TEMP"):
        url = request.getfixturevalue("reader_url")
    else:  # what a hot standby answers too (sqlstate 25006)
        url = movie_db_url
        db = parse_db_url(movie_db_url).database
        with psycopg.connect(movie_db_url, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{db}" SET default_transaction_read_only = on')
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(DRIFTS["changed check"][0])
    r = cli("migrate", "check", "--json", MOVIE_DATABASE_URL=url)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["drifts"] == [] and len(doc["notes"]) == 1
    assert "CHECK definitions were not compared" in doc["notes"][0] and how in doc["notes"][0]
    r = cli("migrate", "check", MOVIE_DATABASE_URL=url)
    assert r.exit_code == 0 and "note: CHECK definitions were not compared" in r.stdout
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("SET default_transaction_read_only = off")
        conn.execute(DRIFTS["dropped check"][0])
    r = cli("migrate", "check", "--json", MOVIE_DATABASE_URL=url)
    assert r.exit_code == 1, r.output
    assert DRIFTS["dropped check"][1] in json.loads(r.stdout)["differences"]


def test_lock_held_by_another_session_names_the_holder(cli_empty, empty_db_url):
    from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY

    with psycopg.connect(empty_db_url, autocommit=True, application_name="nightly-job") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        pid = holder.info.backend_pid
        started = time.monotonic()
        r = cli_empty("migrate", MOVIE_MIGRATE_LOCK_TIMEOUT="1")
        waited = time.monotonic() - started
    assert r.exit_code == 7, r.output
    assert f"pid {pid}" in r.stderr and "nightly-job" in r.stderr
    assert 0.9 < waited < 10
    assert cli_empty("migrate", "status").exit_code == 6  # nothing half-applied
    assert cli_empty("migrate").exit_code == 0  # the lock is free again


def test_two_concurrent_migrations_apply_once(empty_db_url):
    # the second waits for the first's whole run: not the default 10 s a loaded CI can pass
    env = {"MOVIE_DATABASE_URL": empty_db_url, "MOVIE_MIGRATE_LOCK_TIMEOUT": "120"}
    docs = run_at_once(env, "migrate")
    steps = sorted(len(d["steps"]) for d in docs)
    assert steps == [0, 2]  # one applied both, the other waited and found nothing to do


def test_alembic_by_hand_uses_settings(empty_db_url):
    env = subprocess_env(MOVIE_DATABASE_URL=empty_db_url)
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    res = subprocess.run([*alembic, "upgrade", "head"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    res = subprocess.run([*alembic, "current"], env=env, capture_output=True, text=True)
    assert "0002 (head)" in res.stdout
    target = parse_db_url(empty_db_url)
    assert target.password and target.password not in res.stdout + res.stderr


@pytest.mark.parametrize(
    ("env", "code", "needle"),
    [
        (
            {"MOVIE_DATABASE_URL": "postgresql://movie:pw@localhost:notaport/movies"},
            2,
            "malformed MOVIE_DATABASE_URL",
        ),
        ({"MOVIE_DATABASE_URL": "mysql://movie:pw@localhost/movies"}, 2, "malformed"),
        ({"MOVIE_DB_PORT": "1"}, 3, "127.0.0.1:1"),
        ({"MOVIE_DB_HOST": "no-such-host.invalid"}, 3, "does not resolve"),
        ({"MOVIE_DB_PORT": "seventy"}, 2, "MOVIE_DB_PORT"),
    ],
)
def test_bad_connection_settings_give_one_clear_line(env, code, needle):
    from tests.conftest import Cli

    r = Cli(env)("migrate", "status")
    assert r.exit_code == code, r.output
    assert needle in r.stderr
    assert "Traceback" not in r.output
    assert "pw@" not in r.output


def test_wrong_password_and_missing_database(cli, movie_db_url):
    t = parse_db_url(movie_db_url)
    bad = t.url(masked=False).replace(f":{t.password}@", ":wrong-secret@")
    r = cli("migrate", "status", MOVIE_DATABASE_URL=bad)
    assert r.exit_code == 4
    assert f"password authentication failed for user '{t.user}'" in r.stderr
    assert f"{t.host}:{t.port}" in r.stderr
    assert "wrong-secret" not in r.output and t.password not in r.output

    r = cli("migrate", "status", MOVIE_DATABASE_URL=t.with_database("nope").url(masked=False))
    assert r.exit_code == 4
    assert "database 'nope' does not exist" in r.stderr


def test_head_revision_without_alembic_agrees_with_alembic():
    from moviectl.core.migrations.scripts import head_revision, script_directory

    assert head_revision() == script_directory().get_current_head() == "0002"


def test_alembic_command_api_with_a_handed_connection_leaves_the_app_database_alone(
    movie_db_url, empty_db_url, monkeypatch
):
    """Alembic's "sharing a connection" recipe, as migration-testing tools use it: upgrade
    and downgrade run on the caller's connection, never on what MOVIE_* points at."""
    import sqlalchemy
    from alembic import command
    from alembic.config import Config

    from moviectl.core.migrations.scripts import script_location
    from moviectl.infra.conninfo import parse_db_url

    monkeypatch.setenv("MOVIE_DATABASE_URL", movie_db_url)  # the app database
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    engine = sqlalchemy.create_engine(
        "postgresql+psycopg://", connect_args=parse_db_url(empty_db_url).libpq_params()
    )
    try:
        with engine.connect() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            command.downgrade(cfg, "base")
            command.upgrade(cfg, "head")
            command.downgrade(cfg, "base")
    finally:
        engine.dispose()
    with psycopg.connect(empty_db_url) as c:
        assert c.execute("SELECT to_regclass('movies')").fetchone()[0] is None
    with psycopg.connect(movie_db_url) as c:  # untouched: still migrated
        assert c.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
        assert c.execute("SELECT to_regclass('movies')").fetchone()[0] == "movies"


def test_plain_alembic_under_a_held_lock_says_one_line(empty_db_url):
    from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY

    env = subprocess_env(MOVIE_DATABASE_URL=empty_db_url, MOVIE_MIGRATE_LOCK_TIMEOUT="1")
    alembic = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini")]
    with psycopg.connect(empty_db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        res = subprocess.run(
            [*alembic, "upgrade", "head"], env=env, capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 7, res.stderr
    assert "Traceback" not in res.stderr and "migration lock" in res.stderr


def test_an_unknown_revision_in_the_database_is_a_clear_error(cli):
    url = cli.env["MOVIE_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("UPDATE alembic_version SET version_num = '9999'")
    for args in (["migrate", "status"], ["migrate"], ["migrate", "--json"]):
        r = cli(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "9999" in r.output and "does not know" in r.output and "Traceback" not in r.output
    # health reads an unknown revision as a newer release's (a rolling deploy): degraded, served
    r = cli("health", "--json")
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert "ahead of this code's head" in checks["migrations"]["detail"]
    assert checks["migrations"]["data"]["ahead"] is True
    assert "moviectl migrate`" not in checks["migrations"]["detail"]


def test_migrate_to_an_older_revision_points_to_down(cli):
    r = cli("migrate", "--to", "0001")
    assert r.exit_code == 2, r.output
    assert "migrate down --to 0001" in r.stderr
