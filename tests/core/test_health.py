from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.probe import ACCEPTING, BAD_PARAMETERS, NO_RESPONSE, ping
from moviectl.infra.settings import parse_db_url
from tests.conftest import Cli, subprocess_env
from tests.ports import free_port


def _checks(r) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(r.stdout)["checks"]}


def test_all_checks_pass_on_a_migrated_database(cli):
    r = cli("health", "--json")
    assert r.exit_code == 0, r.output
    checks = _checks(r)
    assert list(checks) == ["reachable", "auth", "query", "migrations", "capacity", "archiving"]
    assert all(c["status"] == "pass" for c in checks.values())
    assert checks["query"]["data"]["in_recovery"] is False
    assert set(checks["query"]["data"]["pool"]) == {"size", "checked_out", "overflow"}
    assert checks["migrations"]["data"] == {
        "current": "0002",
        "head": "0002",
        "pending": 0,
        "ahead": False,
    }
    assert checks["capacity"]["data"]["max_connections"] >= 1
    assert all(c["latency_ms"] >= 0 for c in checks.values())


def test_selection_flags(cli):
    assert list(_checks(cli("health", "--live", "--json"))) == ["reachable"]
    assert list(_checks(cli("health", "--ready", "--json"))) == [
        "reachable",
        "auth",
        "query",
        "migrations",
    ]
    assert list(_checks(cli("health", "--check", "auth", "--json"))) == ["auth"]
    assert "capacity" not in _checks(cli("health", "--exclude", "capacity", "--json"))
    r = cli("health", "--check", "vibes")
    assert r.exit_code == 2 and "unknown check 'vibes'" in r.stderr


def test_pending_migrations(cli_empty):
    r = cli_empty("health", "--json")
    assert r.exit_code == 6
    assert _checks(r)["migrations"]["status"] == "fail"
    assert "run `moviectl migrate`" in _checks(r)["migrations"]["detail"]


def test_a_database_one_migration_behind_is_pending_not_unknown(cli):
    """At 0001 with the code at 0002: a known revision, so `run moviectl migrate` (exit 6),
    never "which this code does not know" (the scripts spell `revision: str = ...`)."""
    assert cli("migrate", "down", "--to", "0001", "--yes").exit_code == 0
    r = cli("health", "--json")
    assert r.exit_code == 6, r.output
    detail = _checks(r)["migrations"]["detail"]
    assert "run `moviectl migrate`" in detail and "does not know" not in detail, detail


def test_wrong_password_and_missing_database_are_distinct(cli, movie_db_url):
    t = parse_db_url(movie_db_url)
    r = cli("health", "--json", MOVIE_DATABASE_URL=t.url(masked=False).replace(t.password, "nope"))
    assert r.exit_code == 4
    checks = _checks(r)
    assert checks["reachable"]["status"] == "pass"  # pg_isready would say "ready" here
    assert "password authentication failed" in checks["auth"]["detail"]
    assert checks["query"]["status"] == "skip"
    assert t.password not in r.output

    r = cli("health", "--json", MOVIE_DATABASE_URL=t.with_database("gone").url(masked=False))
    assert r.exit_code == 4 and "database 'gone' does not exist" in _checks(r)["auth"]["detail"]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"MOVIE_DB_PORT": "1"}, "connection refused"),
        ({"MOVIE_DB_HOST": "no-such-host.invalid"}, "does not resolve"),
    ],
)
def test_unreachable(env, needle):
    r = Cli(env)("health", "--json")
    assert r.exit_code == 3
    assert needle in _checks(r)["reachable"]["detail"]


def test_probe_outcomes(moviectl_admin_target):
    t = moviectl_admin_target
    assert ping(t.host, t.port, t.user, t.database).outcome == ACCEPTING
    assert ping(t.host, t.port, "nobody", "nodb").outcome == ACCEPTING  # like pg_isready
    assert ping("127.0.0.1", 1, "u", "d").outcome == NO_RESPONSE
    assert ping("no-such-host.invalid", 5432, "u", "d").outcome == BAD_PARAMETERS


def test_paused_server_times_out_instead_of_hanging(tmp_path):
    srv = EmbeddedServer(tmp_path / "p", free_port(), "postgres", "pw", options=TEST_OPTIONS)
    srv.start()
    pid = srv.state().pid
    try:
        os.kill(pid, signal.SIGSTOP)
        cli = Cli(
            {
                "MOVIE_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres",
                "MOVIE_CONNECT_TIMEOUT": "1",
            }
        )
        started = time.monotonic()
        r = cli("health", "--json", "--check", "reachable", "--check", "auth")
        took = time.monotonic() - started
        assert r.exit_code == 3, r.output
        assert "within 1s" in _checks(r)["reachable"]["detail"]
        assert took < 5
    finally:
        os.kill(pid, signal.SIGCONT)
        srv.stop("immediate")


def test_wait_succeeds_once_a_stopped_server_starts(tmp_path):
    srv = EmbeddedServer(tmp_path / "w", free_port(), "postgres", "pw", options=TEST_OPTIONS)
    srv.start()
    srv.stop()
    timer = threading.Timer(1.5, srv.start)
    timer.start()
    try:
        cli = Cli({"MOVIE_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"})
        r = cli(
            "health",
            "--live",
            "--check",
            "auth",
            "--wait",
            "--timeout",
            "30",
            "--interval",
            "0.2",
            "--json",
        )
        assert r.exit_code == 0, r.output
    finally:
        timer.join()
        srv.stop("immediate")


def test_wait_times_out_with_the_failing_checks_code():
    started = time.monotonic()
    r = Cli({"MOVIE_DB_PORT": "1"})("health", "--wait", "--timeout", "1", "--interval", "0.2")
    assert r.exit_code == 3
    assert time.monotonic() - started < 10


def test_live_ahead_of_typer_matches_the_typer_path(movie_db_url):
    env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url)
    cmd = [sys.executable, "-m", "moviectl", "health", "--live", "--json"]
    fast = subprocess.run(cmd, env=env, capture_output=True, text=True)
    full = subprocess.run(  # -v sends it through Typer
        [*cmd[:3], "-v", *cmd[3:]], env=env, capture_output=True, text=True
    )
    assert fast.returncode == full.returncode == 0
    a, b = json.loads(fast.stdout), json.loads(full.stdout)
    for doc in (a, b):
        doc.pop("elapsed_ms")
        doc["checks"][0].pop("latency_ms")
    assert a == b
    assert parse_db_url(movie_db_url).password not in fast.stdout
    down = subprocess.run(
        cmd,
        env={**env, "MOVIE_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x"},
        capture_output=True,
        text=True,
    )
    assert down.returncode == 3


def test_probes_leave_no_trace_in_the_server_log(tmp_path):
    """As pg_isready: the reachability probe hangs up at the password stage, which the
    server does not log (a Terminate message there was a FATAL line per probe)."""
    srv = EmbeddedServer(tmp_path / "q", free_port(), "postgres", "pw", options=TEST_OPTIONS)
    srv.start()
    try:
        before = srv.logfile.read_text()
        cli = Cli({"MOVIE_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"})
        for _ in range(10):
            assert cli("health", "--live").exit_code == 0
            assert ping("127.0.0.1", srv.port, "postgres", "postgres", 2).outcome == ACCEPTING
        deadline = time.monotonic() + 2  # a bounded look for late lines, not an ordering
        while time.monotonic() < deadline:
            assert srv.logfile.read_text() == before, srv.logfile.read_text()[len(before) :]
            time.sleep(0.1)
    finally:
        srv.stop("immediate")
