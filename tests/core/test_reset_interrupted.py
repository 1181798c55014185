"""`db reset` killed half-way (kill -9) and run twice at once, against a real server.

Whatever moment the kill lands on, a protected database's mark is never lost: the app
database exists and carries it, or (killed between DROP and RENAME) it is gone and the
staging database ``moviectl_reset_<hash>`` carries it, which the next reset reads as the
app database's (refused without the override) and completes. Two resets at once are
serialised by a session advisory lock: both exit 0 and the database ends up reset once.
"""

from __future__ import annotations

import json
import signal

import psycopg
import pytest
from psycopg import sql

from moviectl.core.reset import staging_name
from moviectl.infra.admin import make_mark
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.protect import marks, set_mark
from tests.conftest import Cli, run_at_once, start_moviectl, subprocess_env, wait_for
from tests.core.test_protect import MARK, _state, app_db  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(180)


def _admin(target: DbTarget) -> psycopg.Connection:
    return psycopg.connect(target.url(masked=False), autocommit=True)


def _where_the_mark_is(admin: DbTarget, name: str) -> dict[str, str | None]:
    """{database: its mark} for the app database and its staging twin, those that exist.

    Read once the server is quiet: a killed client's DROP DATABASE goes on in its backend
    (it removes the settings before the row), so a read beside it sees a half-dropped one."""
    staging = staging_name(name)
    with _admin(admin) as c:
        assert wait_for(
            lambda: (
                not c.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()
            ),
            30,
        ), "a statement of the killed reset never ended"
        rows = c.execute(
            "SELECT datname FROM pg_database WHERE datname IN (%s, %s)", (name, staging)
        ).fetchall()
        found = marks(c)
    return {r[0]: found.get(r[0]) for r in rows}


def _progress(admin: DbTarget, url: str, name: str) -> str | None:
    """Where a running reset is: "staging" (the new database made, the old one still
    there), "replaced" (the app database is the new one: no movies yet), or None."""
    if staging_name(name) in _where_the_mark_is(admin, name):
        return "staging"
    try:
        with psycopg.connect(url, connect_timeout=2) as c:
            if c.execute("SELECT to_regclass('movies')").fetchone()[0] is None:  # type: ignore[index]
                return "replaced"
            movies = c.execute("SELECT count(*) FROM movies").fetchone()
            return "replaced" if movies and movies[0] == 0 else None
    except psycopg.Error:
        return None  # dropped, being renamed, or its session ended by the reset


def _drop_staging(admin: DbTarget, name: str) -> None:
    with _admin(admin) as c:
        c.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(staging_name(name))
            )
        )


@pytest.mark.parametrize("moment", ["staging made", "replaced", "0.9s", "1.6s"])
def test_kill_9_mid_reset_never_loses_the_mark(app_db, moviectl_admin_target, moment):  # noqa: F811
    _interrupt_a_reset(app_db, moviectl_admin_target, moment, signal.SIGKILL)


@pytest.mark.parametrize("moment", ["staging made", "replaced", "1.2s"])
def test_sigterm_mid_reset_leaves_what_kill_9_does(app_db, moviectl_admin_target, moment):  # noqa: F811
    """SIGTERM is held across DROP and RENAME, so it may only end the reset where kill -9
    could have: marked app database, or the marked staging twin; and it exits non-zero."""
    code, out = _interrupt_a_reset(app_db, moviectl_admin_target, moment, signal.SIGTERM)
    # exit 0 only for a reset the signal came too late for (a fast one can finish between
    # two looks for its staging database): it then reported the whole reset done
    assert code != 0 or json.loads(out)["environment"] == "production", (moment, out)


def _interrupt_a_reset(
    db: tuple[str, str], moviectl_admin_target: DbTarget, moment: str, sig: int
) -> tuple[int | None, str]:
    """The reset's exit code and its stdout (one JSON document)."""
    name, url = db
    env = {"MOVIE_DATABASE_URL": url, "MOVIE_ALLOW_PROTECTED": name}
    assert Cli(env)("--json", "db", "protect").exit_code == 0
    staging = staging_name(name)
    proc = start_moviectl(subprocess_env(**env), "--json", "db", "reset", "--yes")
    try:
        if moment == "staging made":  # a window of milliseconds: the kill lands near it
            ok = wait_for(
                lambda: (
                    proc.poll() is not None
                    or _progress(moviectl_admin_target, url, name) is not None
                ),
                60,
            )
        elif moment == "replaced":  # the new database in place, being migrated or seeded
            ok = wait_for(lambda: _progress(moviectl_admin_target, url, name) == "replaced", 60)
            assert proc.poll() is None, "the reset ended before the kill"
        else:
            ok = wait_for(lambda: proc.poll() is not None, float(moment[:-1])) or True
        assert ok, moment
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
        code = proc.returncode
        left = _where_the_mark_is(moviectl_admin_target, name)
        # the invariant: the app database, marked; or it is gone and the staging one is marked
        if name in left:
            assert left[name] == "production", (moment, left)
        else:
            assert left.get(staging) == "production", (moment, left)
        # the next reset (overridden) completes it: marked, migrated, seeded, nothing left over
        r = Cli(env)("--json", "db", "reset", "--yes")
        assert r.exit_code == 0, (moment, r.output)
        assert json.loads(r.stdout)["environment"] == "production"
        assert _where_the_mark_is(moviectl_admin_target, name) == {name: "production"}
        assert _state(url)[1] == 3
        return code, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        _drop_staging(moviectl_admin_target, name)


def test_a_reset_killed_between_drop_and_rename_is_still_protected(app_db, moviectl_admin_target):  # noqa: F811
    """The two statements apart (no kill lands there reliably, so the state is made by
    hand, as the kill leaves it): the app database gone, the staging one marked. A `db up`
    may have made an empty unmarked one meanwhile: the staging mark still wins."""
    name, url = app_db
    staging = staging_name(name)
    try:
        for made_again in (False, True):
            with _admin(moviectl_admin_target) as c:
                c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))
                c.execute(
                    sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                        sql.Identifier(staging), sql.Literal(make_mark("reset", of=name))
                    )
                )
                set_mark(c, staging, "production")
                c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
                if made_again:
                    c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            cli = Cli({"MOVIE_DATABASE_URL": url})
            r = cli("--json", "migrate")  # the way out is named
            if not made_again:
                assert r.exit_code == 4 and "db reset" in json.loads(r.stdout)["hint"], r.output
            for yes in (["--yes"], []):  # refused before the prompt, not after it
                r = cli("--json", "db", "reset", *yes)
                assert r.exit_code == 5 and MARK in json.loads(r.stdout)["message"], r.output
            assert staging in _where_the_mark_is(moviectl_admin_target, name)
            r = cli("--json", "db", "reset", "--yes", "--i-know-this-is-production")
            assert r.exit_code == 0, r.output
            assert json.loads(r.stdout)["environment"] == "production"
            assert _where_the_mark_is(moviectl_admin_target, name) == {name: "production"}
            assert _state(url)[1] == 3
    finally:
        _drop_staging(moviectl_admin_target, name)


def test_a_staging_name_moviectl_did_not_mark_is_refused(app_db, moviectl_admin_target):  # noqa: F811
    """Unmarked and holding something: not ours, refused. Unmarked and empty beside the app
    database: what kill -9 during the staging CREATE DATABASE leaves (the backend finishes
    it, the COMMENT never comes): dropped by the next reset, which completes."""
    name, url = app_db
    staging = staging_name(name)
    try:
        with _admin(moviectl_admin_target) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(staging)))
        twin = moviectl_admin_target.with_database(staging).url(masked=False)
        with psycopg.connect(twin, autocommit=True) as c:
            c.execute("CREATE TABLE someones (i int)")
        r = Cli({"MOVIE_DATABASE_URL": url})("--json", "db", "reset", "--yes")
        assert r.exit_code == 5 and "no moviectl reset mark" in r.output, r.output
        assert set(_where_the_mark_is(moviectl_admin_target, name)) == {name, staging}
        assert _state(url)[1] == 3  # the app database as it was
        with psycopg.connect(twin, autocommit=True) as c:
            c.execute("DROP TABLE someones")
        r = Cli({"MOVIE_DATABASE_URL": url})("--json", "db", "reset", "--yes")
        assert r.exit_code == 0, r.output
        assert set(_where_the_mark_is(moviectl_admin_target, name)) == {name}
    finally:
        _drop_staging(moviectl_admin_target, name)


def test_two_resets_at_once_both_succeed_one_after_the_other(app_db, moviectl_admin_target):  # noqa: F811
    name, url = app_db
    env = {"MOVIE_DATABASE_URL": url, "MOVIE_ALLOW_PROTECTED": name}
    assert Cli(env)("--json", "db", "protect").exit_code == 0
    try:
        docs = run_at_once(env, "db", "reset", "--yes", timeout=120)
        assert [d["environment"] for d in docs] == ["production", "production"]
        assert _where_the_mark_is(moviectl_admin_target, name) == {name: "production"}
        rev, movies = _state(url)
        assert rev is not None and movies == 3  # reset once after the other, not mixed
    finally:
        _drop_staging(moviectl_admin_target, name)


def test_the_guard_outlives_another_reset_dropping_the_database(app_db, monkeypatch):  # noqa: F811
    """The race of two resets at once: the second one's guard (before the reset lock) reads
    the mark on the app database while the first drops it WITH (FORCE), which ends that
    session. The server's maintenance database answers instead (was: exit 3, Unreachable)."""
    from moviectl.infra import protect
    from moviectl.infra.settings import load_settings

    name, url = app_db
    monkeypatch.setenv("MOVIE_DATABASE_URL", url)
    settings = load_settings(use_dotenv=False)
    assert Cli({"MOVIE_DATABASE_URL": url})("--json", "db", "protect").exit_code == 0
    real, calls = protect.marks, []

    def ended_once(conn, database=None):  # type: ignore[no-untyped-def]
        calls.append(conn.info.dbname)
        if conn.info.dbname == name:
            raise psycopg.errors.AdminShutdown(
                "terminating connection due to administrator command"
            )
        return real(conn, database)

    monkeypatch.setattr(protect, "marks", ended_once)
    with pytest.raises(protect.Refused, match="protected"):
        protect.guard(settings, "reset it")
    assert protect.environment_of(settings) == "production"
    assert calls.count("postgres") == 2, calls
