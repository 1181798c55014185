"""Behind a real PgBouncer 1.18 in transaction mode, with the app's traffic on it.

MOVIE_DATABASE_URL names the pooler, MOVIE_DATABASE_DIRECT_URL the server: what needs a
session goes direct, so no advisory lock outlives its command and no template is left
open; through the pooler nothing is prepared; a session command pointed at the pooler
alone is refused in one line (exit 2).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from moviectl.infra.conninfo import DbTarget, parse_db_url
from moviectl.infra.engine import connect, make_engine
from moviectl.infra.settings import Settings, load_settings
from tests.conftest import Cli, run_at_once
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.core.pgbouncer import Bouncer

pytest_plugins = ["pytester", "tests.core.pgbouncer"]  # the `pgbouncer` fixture


def _advisory_locks(server: DbTarget) -> list[Any]:
    with psycopg.connect(**server.libpq_params(10), autocommit=True) as c:
        return c.execute(
            "SELECT l.classid, l.objid, d.datname, a.application_name FROM pg_locks l "
            "LEFT JOIN pg_database d ON d.oid = l.database "
            "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
        ).fetchall()


def _pooled(bouncer: Bouncer, direct_url: str) -> str:
    return bouncer.target(parse_db_url(direct_url).database).url(masked=False)


@contextmanager
def _traffic(target: DbTarget, settings: Settings, threads: int = 3) -> Iterator[dict[str, Any]]:
    """The app on the pooler: threads running the same statement again and again through
    moviectl's engine (past psycopg's prepare threshold) until the block ends."""
    engine = make_engine(settings, target=target)
    stop, seen = threading.Event(), {"queries": 0, "errors": []}

    def loop() -> None:
        from sqlalchemy import text

        while not stop.is_set():
            try:
                with engine.connect() as c:
                    c.execute(text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": "x"})
                    c.commit()
                seen["queries"] += 1
            except Exception as exc:  # collected: the test asserts there were none
                seen["errors"].append(repr(exc))

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield seen
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=60)
        engine.dispose()
    assert seen["errors"] == [] and seen["queries"] > 0, seen["errors"][:3]


def test_pgbouncer_is_seen_and_only_there_nothing_is_prepared(
    pgbouncer: Bouncer, movie_db_url: str, moviectl_settings: Settings
) -> None:
    from moviectl.infra.pooler import through_pooler

    direct = parse_db_url(movie_db_url)
    pooled = pgbouncer.target(direct.database)
    with connect(pooled) as c, connect(direct) as d:
        assert through_pooler(c) and not through_pooler(d)
        assert c.prepare_threshold is None  # plain connections never prepare
    seen = make_engine(moviectl_settings, target=pooled)
    plain = make_engine(moviectl_settings, target=direct)
    with seen.connect() as a, plain.connect() as b:
        assert a.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
        assert b.connection.dbapi_connection.prepare_threshold == 5  # type: ignore[union-attr]
    seen.dispose(), plain.dispose()
    declared = load_settings(
        use_dotenv=False, database_url=pooled.url(masked=False), database_direct_url=movie_db_url
    )
    engine = make_engine(declared)
    with engine.connect() as a:
        assert a.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
    engine.dispose()


def test_a_session_command_at_the_pooler_is_refused_in_one_line(
    pgbouncer: Bouncer, movie_db_url: str, moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    pooled = _pooled(pgbouncer, movie_db_url)
    cli = Cli({"MOVIE_DATABASE_URL": pooled})
    where = f"127.0.0.1:{pgbouncer.port}"
    (tmp_path / "b").mkdir()
    for args in (
        ["migrate"],
        ["migrate", "down", "--to", "base", "--yes"],
        ["seed", "--sample", "3"],
        ["backup", "--output", str(tmp_path / "b")],
        ["testdb", "create"],
    ):
        r = cli(*args, "--json")
        doc = json.loads(r.stdout)
        assert r.exit_code == 2, (args, r.output)
        assert where in doc["message"] and "connection pooler" in doc["message"], doc
        assert "set MOVIE_DATABASE_DIRECT_URL" in doc["message"], doc
    r = cli("migrate")
    assert r.exit_code == 2 and "MOVIE_DATABASE_DIRECT_URL" in r.output.splitlines()[0], r.output
    _the_migration_lock_refuses_a_pooled_connection(parse_db_url(pooled))  # `alembic` by hand
    r = cli("migrate", "--json", MOVIE_DATABASE_DIRECT_URL=pooled)  # the direct URL, wrong too
    assert r.exit_code == 2 and "point MOVIE_DATABASE_DIRECT_URL at" in r.output, r.output
    # what needs no session works through the pooler; nothing changed, nothing left held
    assert cli("migrate", "status").exit_code == 0
    assert cli("health").exit_code == 0
    assert not any((tmp_path / "b").iterdir())
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM seed_runs").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)
    assert _advisory_locks(moviectl_admin_target) == []


def _the_migration_lock_refuses_a_pooled_connection(pooled: DbTarget) -> None:
    from moviectl.core.migrations.lock import migration_lock
    from moviectl.infra.errors import ConfigError

    engine = make_engine(load_settings(use_dotenv=False), target=pooled, pooled=False)
    try:
        with (
            engine.connect() as conn,
            pytest.raises(ConfigError, match="connection pooler"),
            migration_lock(conn, 1.0, pooled),
        ):
            pytest.fail("the lock was taken through the pooler")
    finally:
        engine.dispose()


def test_migrate_20_times_behind_the_pooler_with_traffic_leaks_no_lock(
    pgbouncer: Bouncer,
    empty_db_url: str,
    moviectl_settings: Settings,
    moviectl_admin_target: DbTarget,
) -> None:
    pooled = _pooled(pgbouncer, empty_db_url)
    cli = Cli({"MOVIE_DATABASE_URL": pooled, "MOVIE_DATABASE_DIRECT_URL": empty_db_url})
    with _traffic(parse_db_url(pooled), moviectl_settings):
        for _ in range(10):
            up = cli("migrate", "--json")
            assert up.exit_code == 0 and json.loads(up.stdout)["steps"], up.output
            down = cli("migrate", "down", "--to", "base", "--yes", "--json")
            assert down.exit_code == 0, down.output
            assert _advisory_locks(moviectl_admin_target) == []
        assert cli("migrate").exit_code == 0
        status = cli("migrate", "status", "--json")  # read through the pooler
        assert status.exit_code == 0 and json.loads(status.stdout)["pending"] == []
    assert _advisory_locks(moviectl_admin_target) == []


def test_two_seeds_at_once_behind_the_pooler(
    pgbouncer: Bouncer,
    movie_db_url: str,
    moviectl_settings: Settings,
    moviectl_admin_target: DbTarget,
) -> None:
    pooled = _pooled(pgbouncer, movie_db_url)
    env = {"MOVIE_DATABASE_URL": pooled, "MOVIE_DATABASE_DIRECT_URL": movie_db_url}
    with _traffic(parse_db_url(pooled), moviectl_settings):
        docs = run_at_once(env, "seed", "--sample", "2000", n=2)
        assert sorted(d["status"] for d in docs) == ["already seeded", "done"], docs
        again = run_at_once(env, "seed", "--sample", "2000", "--again", n=2)
        assert [d["status"] for d in again] == ["done", "done"], again
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone() == (6000,)
        runs = c.execute("SELECT status, count(*) FROM seed_runs GROUP BY 1").fetchall()
        assert runs == [("done", 3)]
    assert _advisory_locks(moviectl_admin_target) == []


def test_testdb_create_behind_the_pooler_goes_direct_and_strands_no_template(
    pgbouncer: Bouncer, moviectl_settings: Settings, moviectl_admin_target: DbTarget
) -> None:
    direct = moviectl_admin_target.url(masked=False)
    env = {"MOVIE_DATABASE_URL": _pooled(pgbouncer, direct), "MOVIE_DATABASE_DIRECT_URL": direct}
    with _traffic(pgbouncer.target("postgres"), moviectl_settings):
        made = run_at_once(env, "testdb", "create", n=2)
    names = [d["name"] for d in made]
    with connect(pgbouncer.admin()) as console:
        pooled_dbs = [r[0] for r in console.execute("SHOW POOLS").fetchall()]
    assert not [d for d in pooled_dbs if d.startswith(("movies_tpl_", "movies_test_"))]
    with psycopg.connect(**moviectl_admin_target.libpq_params(10), autocommit=True) as c:
        open_on_templates = c.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'movies\\_tpl\\_%'"
        ).fetchone()
    assert open_on_templates == (0,)
    assert _advisory_locks(moviectl_admin_target) == []
    r = Cli(env)("testdb", "drop", *names, "--yes")
    assert r.exit_code == 0, r.output


def test_the_pytest_plugin_behind_the_pooler(
    pytester: pytest.Pytester,
    pgbouncer: Bouncer,
    moviectl_admin_target: DbTarget,
    moviectl_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(
        """
        from sqlalchemy import text

        def test_one(movie_connection):
            assert movie_connection.execute(text("SELECT count(*) FROM movies")).scalar() == 0

        def test_two(movie_db_url):
            import psycopg
            with psycopg.connect(movie_db_url) as c:
                assert c.execute("SELECT count(*) FROM seed_runs").fetchone() == (0,)
        """
    )
    direct = moviectl_admin_target.url(masked=False)
    monkeypatch.setenv("MOVIE_DATABASE_URL", _pooled(pgbouncer, direct))
    with _traffic(pgbouncer.target("postgres"), moviectl_settings):
        monkeypatch.setenv("MOVIE_DATABASE_DIRECT_URL", direct)
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
        result.assert_outcomes(passed=2)
        monkeypatch.delenv("MOVIE_DATABASE_DIRECT_URL")  # the pooler alone: refused, said why
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
        result.assert_outcomes(errors=2)
        result.stdout.fnmatch_lines(["*connection pooler*set MOVIE_DATABASE_DIRECT_URL*"])
    assert _advisory_locks(moviectl_admin_target) == []


def test_health_and_metrics_report_the_pooler(
    pgbouncer: Bouncer, movie_db_url: str, tmp_path: Path
) -> None:
    from moviectl.core.health.checks import run_health
    from moviectl.core.health.metrics import metrics_body
    from moviectl.core.health.pooler import read_pooler

    pooled = _pooled(pgbouncer, movie_db_url)
    name = parse_db_url(movie_db_url).database
    console = pgbouncer.admin().url(masked=False)
    cli = Cli({"MOVIE_DATABASE_URL": pooled, "MOVIE_PGBOUNCER_ADMIN_URL": console})
    r = cli("health", "--json")
    assert r.exit_code == 0, r.output
    pooler = json.loads(r.stdout)["pooler"]
    assert pooler["up"] and pooler["where"] == f"127.0.0.1:{pgbouncer.port}"
    assert [p["pool_mode"] for p in pooler["pools"] if p["database"] == name] == ["transaction"]
    assert f"pooler: 127.0.0.1:{pgbouncer.port} (transaction)" in cli("health").output

    settings = load_settings(use_dotenv=False, database_url=pooled, pgbouncer_admin_url=console)
    body = metrics_body(run_health(settings), None, None, read_pooler(settings)).decode()
    assert "moviectl_pgbouncer_up 1.0" in body
    labels = f'database="{name}",user="{pgbouncer.server.user}"'
    for series in ("clients_waiting", "servers_active", "max_wait_seconds"):
        assert f"moviectl_pgbouncer_{series}{{{labels}}} " in body, series  # zeros too
    assert f'moviectl_pgbouncer_transactions_total{{database="{name}"}} ' in body
    assert 'pgbouncer"' not in body  # the console's own pool is left out
    promtool = shutil.which("promtool")
    if promtool:
        (tmp_path / "m.txt").write_text(body)
        with (tmp_path / "m.txt").open() as f:
            check = subprocess.run([promtool, "check", "metrics"], stdin=f, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr

    # the probe server's /metrics: the console read by its own refresher, off the event loop
    from moviectl.core.health.http import HealthService

    service = HealthService(settings, deadline=30)
    try:
        served = asyncio.run(service.metrics()).decode()
    finally:
        service.close()
    assert "moviectl_pgbouncer_up 1.0" in served
    assert f'moviectl_pgbouncer_transactions_total{{database="{name}"}} ' in served

    gone = f"postgresql://{pgbouncer.server.user}:x@127.0.0.1:{free_port()}/pgbouncer"
    down = settings.but(
        pgbouncer_admin_url=load_settings(
            use_dotenv=False, pgbouncer_admin_url=gone
        ).pgbouncer_admin_url
    )
    body = metrics_body(run_health(settings), None, None, read_pooler(down)).decode()
    assert "moviectl_pgbouncer_up 0.0" in body  # and no pool series: no pool is known
    assert "moviectl_pgbouncer_clients_active{" not in body
