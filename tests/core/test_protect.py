"""Protected environments (`moviectl db protect`) and `db reset`, against a real server.

A database marked production refuses every destructive command (exit 5, naming the mark)
and is left as it was; only the separately named override (the flag, or
MOVIE_ALLOW_PROTECTED naming *that* database) lets one through, and an overridden
`db reset` keeps the mark. The mark belongs to the database, not its data: a backup
restored elsewhere is not protected.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from moviectl.infra.conninfo import DbTarget
from tests.conftest import Cli

pytestmark = pytest.mark.timeout(300)

MARK = "moviectl.environment = 'production'"


def _state(url: str) -> tuple[str | None, int]:
    """The database's revision and its movie count: what a refused command must keep."""
    with psycopg.connect(url) as conn:
        rev = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        movies = conn.execute("SELECT count(*) FROM movies").fetchone()
    return (rev[0] if rev else None), int(movies[0] if movies else -1)


def _mark_of(admin: DbTarget, name: str) -> str | None:
    from moviectl.infra.protect import marks

    with psycopg.connect(admin.url(masked=False), autocommit=True) as conn:
        return marks(conn, name).get(name)


@pytest.fixture
def app_db(moviectl_admin_target: DbTarget) -> Iterator[tuple[str, str]]:
    """A migrated, seeded app database of this test's own (not a test clone: `db reset`
    recreates it without the test-database mark), dropped afterwards."""
    name = f"prot_{secrets.token_hex(6)}"
    admin = moviectl_admin_target.url(masked=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = moviectl_admin_target.with_database(name).url(masked=False)
    try:
        cli = Cli({"MOVIE_DATABASE_URL": url})
        for args in (["migrate"], ["seed", "--sample", "3"]):
            r = cli("--json", *args)
            assert r.exit_code == 0, r.output
        yield name, url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


def test_a_protected_database_refuses_every_destructive_command(app_db, tmp_path):
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url, "MOVIE_BACKUP_DIR": str(tmp_path / "b")})
    r = cli("--json", "backup")
    assert r.exit_code == 0, r.output
    backup = json.loads(r.stdout)["path"]
    r = cli("--json", "db", "protect")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["environment"] == "production" and doc["changed"] is True
    before = _state(url)
    destructive = [
        ["db", "reset", "--yes"],
        ["db", "reset", "--no-seed", "--yes"],
        ["migrate", "down", "--to", "base", "--yes"],
        ["migrate", "down", "--steps", "1", "--yes"],
        ["migrate", "redo", "--yes"],
        ["seed", "--sample", "3", "--reset", "--yes"],
        ["restore", backup, "--into", name, "--force", "--yes"],
    ]
    for args in destructive:
        r = cli("--json", *args)
        assert r.exit_code == 5, (args, r.output)
        err = json.loads(r.stdout)
        assert err["error"] == "Refused" and MARK in err["message"], (args, err)
        assert name in err["message"] and "--i-know-this-is-production" in err["hint"]
        # MOVIE_ALLOW_PROTECTED must name this very database: another name is no override
        r = cli("--json", *args, MOVIE_ALLOW_PROTECTED="some_other_db")
        assert r.exit_code == 5, (args, r.output)
    assert _state(url) == before
    # reading is never refused
    for args in (["migrate", "status"], ["health"], ["backup"], ["migrate", "dump"]):
        r = cli("--json", *args)
        assert r.exit_code == 0, (args, r.output)


def test_prompts_and_config_show_name_the_environment(app_db):
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url})
    r = cli("--json", "config", "show")
    assert json.loads(r.stdout)["protection"] == "not protected"
    assert cli("--json", "db", "protect").exit_code == 0
    doc = json.loads(cli("--json", "config", "show").stdout)
    assert doc["protection"] == "protected" and doc["environment"] == "production"
    # with the override, the prompt still asks, and says what it is about to touch
    r = cli("--json", "db", "reset", "--i-know-this-is-production")
    assert r.exit_code == 5 and json.loads(r.stdout)["error"] == "ConfirmationRequired"
    assert f"database {name}" in r.stdout and "environment PRODUCTION, protected" in r.stdout
    # an unreachable server: the prompt is never reached, the connection's error is the answer
    r = Cli({"MOVIE_DATABASE_URL": "postgresql://u:Pw-12345@127.0.0.1:1/x"})(
        "--json", "migrate", "down", "--steps", "1"
    )
    assert r.exit_code == 3, r.output
    doc = json.loads(
        Cli({"MOVIE_DATABASE_URL": "postgresql://u:Pw-12345@127.0.0.1:1/x"})(
            "--json", "config", "show"
        ).stdout
    )
    assert doc["protection"] == "unknown" and doc["environment"] is None


def test_an_overridden_reset_keeps_the_mark(app_db, moviectl_admin_target):
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url})
    assert cli("--json", "db", "protect", "--environment", "staging").exit_code == 0
    r = cli("--json", "db", "reset", "--yes", MOVIE_ALLOW_PROTECTED=name)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["existed"] is True and doc["environment"] == "staging"
    assert doc["seeded"]["inserted"] == 3
    assert _mark_of(moviectl_admin_target, name) == "staging"
    assert _state(url)[1] == 3  # dropped and seeded again: the sample's three movies only
    # and the flag works as the variable does
    r = cli("--json", "migrate", "down", "--steps", "1", "--yes", "--i-know-this-is-production")
    assert r.exit_code == 0, r.output
    assert _mark_of(moviectl_admin_target, name) == "staging"
    # lifting the mark asks first; then nothing refuses
    r = cli("--json", "db", "protect", "--unprotect", "--yes")
    assert r.exit_code == 0 and json.loads(r.stdout)["environment"] is None
    assert cli("--json", "migrate", "down", "--to", "base", "--yes").exit_code == 0


def test_the_mark_stays_with_the_database_not_its_data(app_db, moviectl_admin_target, tmp_path):
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url, "MOVIE_BACKUP_DIR": str(tmp_path / "b")})
    assert cli("--json", "db", "protect").exit_code == 0
    r = cli("--json", "backup")
    assert r.exit_code == 0, r.output
    r = cli("--json", "restore", json.loads(r.stdout)["path"])  # into a new database
    assert r.exit_code == 0, r.output
    copy = json.loads(r.stdout)["database"]
    try:
        assert _mark_of(moviectl_admin_target, copy) is None
        assert _mark_of(moviectl_admin_target, name) == "production"
    finally:
        with psycopg.connect(moviectl_admin_target.url(masked=False), autocommit=True) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(copy))
            )


def test_the_server_wide_guard_sees_any_protected_database(
    app_db, moviectl_settings, moviectl_admin_target
):
    """`db down --volumes` deletes every database on the server: one protected database
    anywhere on it refuses (the guard reads the shared catalog from `postgres`)."""
    from dataclasses import replace

    from moviectl.infra.errors import Refused, Unreachable
    from moviectl.infra.protect import guard

    name, url = app_db
    assert Cli({"MOVIE_DATABASE_URL": url})("--json", "db", "protect").exit_code == 0
    elsewhere = moviectl_admin_target.with_database("postgres")
    with pytest.raises(Refused, match=name):
        guard(moviectl_settings, "delete the server's data", target=elsewhere, server_wide=True)
    allowed = replace(moviectl_settings, allow_protected=name)
    guard(allowed, "delete the server's data", target=elsewhere, server_wide=True)
    # a stopped server has nothing left to guard: server-wide passes, a database's fails
    gone = DbTarget("127.0.0.1", 1, "u", None, "x")
    guard(moviectl_settings, "delete the server's data", target=gone, server_wide=True)
    with pytest.raises(Unreachable):
        guard(moviectl_settings, "drop it", target=gone)


def test_testdb_drop_never_drops_a_protected_test_database(
    moviectl_settings, moviectl_admin_target
):
    from moviectl.core import testdb
    from moviectl.infra.protect import set_mark

    db = testdb.create(moviectl_settings, target=moviectl_admin_target)
    with psycopg.connect(moviectl_admin_target.url(masked=False), autocommit=True) as conn:
        set_mark(conn, db.name, "production")
    cli = Cli({"MOVIE_DATABASE_URL_TEST": moviectl_admin_target.url(masked=False)})
    r = cli("--json", "testdb", "drop", db.name)
    assert r.exit_code == 5 and MARK in json.loads(r.stdout)["message"], r.output
    assert _mark_of(moviectl_admin_target, db.name) == "production"
    r = cli("--json", "testdb", "drop", db.name, MOVIE_ALLOW_PROTECTED=db.name)
    assert r.exit_code == 0, r.output
