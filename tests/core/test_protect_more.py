"""The protection mark where the first round left it unread: `restore --physical
--promote` / `pitr promote`, `testdb prune`, `migrate stamp` — against a real server.

Each refuses a protected database (exit 5, naming the mark) before anything is prompted,
restored, dropped or written, and lets the separately named override through.
"""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.conftest import Cli
from tests.core.test_protect import MARK, _mark_of, _state, app_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(120)


def test_promotion_over_a_protected_database_is_refused(app_db, tmp_path):  # noqa: F811
    """A promotion rolls back every database on the server: one protected database on it
    refuses `restore --physical --promote` and `pitr promote` before the restore runs."""
    name, url = app_db
    env = {"MOVIE_DATABASE_URL": url, "MOVIE_BACKUP_DIR": str(tmp_path / "b")}
    cli = Cli(env)
    assert cli("--json", "db", "protect").exit_code == 0
    before = _state(url)
    promotions = [
        ["restore", "--physical", "--latest", "--promote", "--yes"],
        ["pitr", "promote", "restore-20261202T140700Z", "--yes"],
    ]
    for args in promotions:
        r = cli("--json", *args)
        assert r.exit_code == 5, (args, r.output)
        err = json.loads(r.stdout)
        assert err["error"] == "Refused" and MARK in err["message"], (args, err)
        assert name in err["message"] and "--i-know-this-is-production" in err["hint"]
        r = cli("--json", *args, MOVIE_ALLOW_PROTECTED="some_other_db")
        assert r.exit_code == 5 and MARK in json.loads(r.stdout)["message"], (args, r.output)
        # the override passes the guard: what stops it now is PITR itself (nothing to restore)
        for override in ({"MOVIE_ALLOW_PROTECTED": name}, {}):
            flag = [] if override else ["--i-know-this-is-production"]
            r = cli("--json", *args, *flag, **override)
            assert r.exit_code not in (0, 5), (args, r.output)
            assert MARK not in r.stdout, (args, r.output)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").rglob("restore.json"))
    assert _state(url) == before


def test_testdb_prune_keeps_a_protected_test_database(moviectl_settings, moviectl_admin_target):
    """A due (expired) test database carrying the mark is kept and named, not dropped; the
    sweep goes on (exit 0) and drops its unmarked neighbour; the override lets it go."""
    import time

    from moviectl.core import testdb
    from moviectl.infra.protect import set_mark

    life = testdb.parse_ttl("1s")
    marked = testdb.create(moviectl_settings, target=moviectl_admin_target, ttl=life)
    plain = testdb.create(moviectl_settings, target=moviectl_admin_target, ttl=life)
    with psycopg.connect(moviectl_admin_target.url(masked=False), autocommit=True) as conn:
        set_mark(conn, marked.name, "production")
    time.sleep(1.2)  # both expired
    cli = Cli({"MOVIE_DATABASE_URL_TEST": moviectl_admin_target.url(masked=False)})
    r = cli("--json", "testdb", "prune")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert plain.name in doc["dropped"] and marked.name not in doc["dropped"], doc
    assert marked.name in doc["protected"] and marked.name in doc["kept"], doc
    assert _mark_of(moviectl_admin_target, marked.name) == "production"
    r = cli("testdb", "prune")
    assert r.exit_code == 0 and f"kept {marked.name}: it is marked protected" in r.output
    r = cli("--json", "testdb", "prune", MOVIE_ALLOW_PROTECTED="some_other_db")
    assert marked.name in json.loads(r.stdout)["protected"], r.output
    r = cli("--json", "testdb", "prune", MOVIE_ALLOW_PROTECTED=marked.name)
    assert r.exit_code == 0 and marked.name in json.loads(r.stdout)["dropped"], r.output
    assert _mark_of(moviectl_admin_target, marked.name) is None


def test_migrate_stamp_on_a_protected_database_is_refused(app_db):  # noqa: F811
    """A stamp changes no table but tells every later `migrate` what the schema is: on a
    protected database it is refused like the downgrades, the recorded revision kept."""
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url})
    assert cli("--json", "db", "protect").exit_code == 0
    before = _state(url)
    for rev in ("base", "head", before[0] or "head"):
        r = cli("--json", "migrate", "stamp", rev)
        assert r.exit_code == 5, (rev, r.output)
        err = json.loads(r.stdout)
        assert err["error"] == "Refused" and MARK in err["message"] and name in err["message"]
        assert "--i-know-this-is-production" in err["hint"]
        r = cli("--json", "migrate", "stamp", rev, MOVIE_ALLOW_PROTECTED="some_other_db")
        assert r.exit_code == 5, (rev, r.output)
    assert _state(url) == before
    r = cli("--json", "migrate", "stamp", "nosuchrev")  # a typo is still the typo's error
    assert r.exit_code == 2, r.output
    # the override: the flag, or the variable naming this very database
    r = cli("--json", "migrate", "stamp", "base", MOVIE_ALLOW_PROTECTED=name)
    assert r.exit_code == 0 and json.loads(r.stdout)["to_revision"] is None, r.output
    r = cli("--json", "migrate", "stamp", "head", "--i-know-this-is-production")
    assert r.exit_code == 0, r.output
    assert _state(url) == before and _mark_of_app(url) == "production"


def _mark_of_app(url: str) -> str | None:
    from moviectl.infra.protect import marks

    with psycopg.connect(url) as conn:
        name = conn.info.dbname
        return marks(conn, name).get(name)


def test_irreversible_upgrade_steps_on_a_protected_server_are_refused(app_db):  # noqa: F811
    """`db upgrade --rollback` (drops the writes made since) and `--method link` or `swap`
    (no way back) on a server holding a protected database: exit 5 before anything else runs; the
    override lets them through to the upgrade's own checks."""
    name, url = app_db
    cli = Cli({"MOVIE_DATABASE_URL": url, "MOVIE_DB_BACKEND": "embedded"})
    assert cli("--json", "db", "protect").exit_code == 0
    before = _state(url)
    for args in (
        ["--rollback"],
        ["--to", "18", "--method", "link"],
        ["--to", "18", "--method", "swap"],
    ):
        r = cli("--json", "db", "upgrade", *args, "--yes")
        assert r.exit_code == 5, (args, r.output)
        assert MARK in json.loads(r.stdout)["message"], (args, r.output)
    r = cli("--json", "db", "upgrade", "--rollback", "--yes", MOVIE_ALLOW_PROTECTED=name)
    assert r.exit_code not in (0, 5) and MARK not in r.stdout, r.output  # nothing to roll back
    assert _state(url) == before
