"""Behind a real PgBouncer in each pool_mode, and with a direct URL that leads elsewhere.

- A ``migrate`` killed (SIGKILL) while it holds the migration lock, behind a pooler in
  transaction and in session mode: the lock lives on the direct session, so it goes with
  the process; none is left in ``pg_locks`` and the next ``migrate`` runs.
- A pooler in statement mode (no transaction blocks): one line naming the pooler and its
  mode, exit 2, not "lost the connection … is the server running?".
- MOVIE_DATABASE_DIRECT_URL naming another database than the one MOVIE_DATABASE_URL reaches:
  refused before anything is changed (a typo there would migrate the wrong database).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY
from moviectl.infra.conninfo import DbTarget, parse_db_url
from tests.conftest import Cli, copy_migrations, start_moviectl, subprocess_env, wait_for
from tests.core.pgbouncer import start_pgbouncer
from tests.ports import free_port

GATE = 4343
GATED_0003 = f'''"""0003: waits at the gate."""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_advisory_lock({GATE})")
    op.execute("CREATE TABLE passed_the_gate (x int)")


def downgrade() -> None:
    op.execute("DROP TABLE passed_the_gate")
'''


def _advisory(server: DbTarget, key: int) -> list[Any]:
    """Granted or waiting advisory locks ``key`` anywhere on the server."""
    with psycopg.connect(**server.libpq_params(10), autocommit=True) as c:
        return c.execute(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::oid",
            (key & 0xFFFFFFFF,),
        ).fetchall()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_migrate_killed_behind_the_pooler_leaves_no_lock(
    mode: str, empty_db_url: str, moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_gated.py").write_text(GATED_0003)
    database = parse_db_url(empty_db_url).database
    with start_pgbouncer(moviectl_admin_target, tmp_path, mode) as bouncer:
        env = {
            "MOVIE_DATABASE_URL": bouncer.target(database).url(masked=False),
            "MOVIE_DATABASE_DIRECT_URL": empty_db_url,
            "MOVIE_MIGRATIONS_DIR": str(scripts),
        }
        with psycopg.connect(empty_db_url, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
            proc = start_moviectl(subprocess_env(**env), "--json", "migrate", cwd=None)
            try:  # holding the migration lock, waiting at the gate inside 0003
                waiting = lambda: [g for _, g in _advisory(moviectl_admin_target, GATE)]  # noqa: E731
                assert wait_for(lambda: False in waiting(), 60)
                held = [g for _, g in _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY)]
                assert held == [True]
            finally:
                proc.kill()
                proc.communicate(timeout=60)
            # the killed backend notices within a second (client_connection_check_interval)
            assert wait_for(lambda: not _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY), 30)
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        assert wait_for(lambda: not _advisory(moviectl_admin_target, GATE), 30)
        r = Cli(env)("migrate", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["to_revision"] == "0003"
    assert _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY) == []


def test_a_pooler_in_statement_mode_is_named_in_one_line(
    movie_db_url: str, moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    database = parse_db_url(movie_db_url).database
    with start_pgbouncer(moviectl_admin_target, tmp_path, "statement") as bouncer:
        pooled = bouncer.target(database).url(masked=False)
        cli = Cli({"MOVIE_DATABASE_URL": pooled, "MOVIE_DATABASE_DIRECT_URL": movie_db_url})
        assert cli("migrate", "status").exit_code == 0  # one autocommit read: it works there
        for args in (["migrate", "check"],):
            r = cli(*args, "--json")
            doc = json.loads(r.stdout)
            assert r.exit_code == 2, (args, r.output)
            assert doc["message"].startswith(f"127.0.0.1:{bouncer.port} is a connection pooler")
            assert "statement" in doc["message"] and "db up" not in r.output, doc
            assert "pool_mode" in doc["hint"], doc
        r = cli("health", "--json")  # the query check names it too
        query = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "query")
        assert r.exit_code != 0 and "statement" in query["detail"], query
        assert cli("migrate", "--json").exit_code == 0  # what goes direct still works


def test_a_direct_url_to_another_database_is_refused(
    movie_db_url: str, empty_db_url: str, moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    with start_pgbouncer(moviectl_admin_target, tmp_path, "transaction") as pgbouncer:
        _direct_url_elsewhere(
            pgbouncer.target(parse_db_url(movie_db_url).database), movie_db_url, empty_db_url
        )


def _direct_url_elsewhere(pooler: DbTarget, movie_db_url: str, empty_db_url: str) -> None:
    pooled = pooler.url(masked=False)
    other = parse_db_url(empty_db_url).database
    cli = Cli({"MOVIE_DATABASE_URL": pooled, "MOVIE_DATABASE_DIRECT_URL": empty_db_url})
    for args in (["migrate"], ["seed", "--sample", "3"]):
        r = cli(*args, "--json")
        assert r.exit_code == 2, (args, r.output)
        doc = json.loads(r.stdout)
        assert "MOVIE_DATABASE_DIRECT_URL" in doc["message"] and other in doc["message"], doc
        assert parse_db_url(movie_db_url).database in doc["message"], doc
    with psycopg.connect(empty_db_url) as c:  # nothing was migrated there
        assert c.execute("SELECT to_regclass('alembic_version')").fetchone() == (None,)
    # both lead to the same database: it runs; a pooler that does not answer does not stop
    # a migration (the direct URL is all it needs)
    direct = Cli({"MOVIE_DATABASE_URL": pooled, "MOVIE_DATABASE_DIRECT_URL": movie_db_url})
    assert direct("migrate").exit_code == 0
    gone = replace(parse_db_url(pooled), port=free_port()).url(masked=False)
    assert direct("migrate", MOVIE_DATABASE_URL=gone).exit_code == 0


def test_a_template_left_open_by_the_pooler_does_not_fail_testdb_create(
    moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    """A template once reached through the pooler (an older moviectl built it there; someone
    opened it by hand): PgBouncer keeps an idle server connection on it for
    server_idle_timeout (600 s), and CREATE DATABASE ... TEMPLATE fails with ObjectInUse.
    ``testdb create`` must still clone it, direct connections included."""
    direct = moviectl_admin_target.url(masked=False)
    with start_pgbouncer(moviectl_admin_target, tmp_path, "transaction") as bouncer:
        env = {
            "MOVIE_DATABASE_URL": bouncer.target("postgres").url(masked=False),
            "MOVIE_DATABASE_DIRECT_URL": direct,
        }
        cli = Cli(env)
        r = cli("testdb", "create", "--json")
        assert r.exit_code == 0, r.output
        first = json.loads(r.stdout)
        template = first["template"]
        with psycopg.connect(direct, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS true')
            with psycopg.connect(bouncer.target(template).url(masked=False)) as pooled:
                pooled.execute("SELECT 1").fetchone()  # the pooler keeps its server connection
            admin.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (template,)
            ).fetchone()
            assert left is not None and left[0] >= 1  # the trap is set
        r = cli("testdb", "create", "--json")
        assert r.exit_code == 0, r.output
        second = json.loads(r.stdout)
        assert second["template"] == template
        r = cli("testdb", "drop", first["name"], second["name"], "--yes")
        assert r.exit_code == 0, r.output


def test_a_template_session_this_role_may_not_end_is_named_with_the_way_out(
    moviectl_admin_target: DbTarget,
) -> None:
    """A session on the template that this role may not terminate (a superuser's): exit 7
    naming the template and PgBouncer's KILL, not the bare ObjectInUse; nothing is made."""
    admin = moviectl_admin_target
    role, password = f"tpl_{secrets.token_hex(4)}", secrets.token_hex(8)
    su_cli = Cli({"MOVIE_DATABASE_URL": admin.url(masked=False)})
    r = su_cli("testdb", "create", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    template = first["template"]
    assert su_cli("testdb", "drop", first["name"], "--yes").exit_code == 0
    with psycopg.connect(**admin.libpq_params(10), autocommit=True) as su:
        su.execute(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
        su.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS true')
        try:
            with psycopg.connect(**admin.with_database(template).libpq_params(10)) as held:
                held.execute("SELECT 1")
                su.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
                mine = replace(admin, user=role, password=password)
                r = Cli({"MOVIE_DATABASE_URL": mine.url(masked=False)})(
                    "testdb", "create", "--json"
                )
                doc = json.loads(r.stdout)
                assert r.exit_code == 7 and template in doc["message"], r.output
                assert f"KILL {template}" in doc["hint"], doc
                made = su.execute(
                    "SELECT count(*) FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                    "WHERE r.rolname = %s",
                    (role,),
                ).fetchone()
                assert made == (0,)
        finally:
            su.execute(f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
            su.execute(f"DROP ROLE IF EXISTS {role}")
