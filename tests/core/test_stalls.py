"""A server that stops answering mid-work (SIGSTOP): long commands end with exit 3 in
bounded time (MOVIE_STALL_TIMEOUT), kill their child tools and keep nothing partial."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg
import pytest

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.admin import drop_database_force
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.engine import connect
from moviectl.infra.settings import Settings, load_settings
from tests.conftest import SEEDED_MOVIES, Cli, seeded_database, subprocess_env, wait_for
from tests.ports import free_port


@pytest.fixture(scope="module")
def pausable_server(tmp_path_factory) -> Iterator[tuple[EmbeddedServer, DbTarget, str]]:
    """A server of this module's own (pausing the worker's would stall its clone pool),
    with a database seeded once to clone: (the server, its admin target, that database)."""
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("pausable"), free_port(), "postgres", "pw", options=TEST_OPTIONS
    )
    srv.start()
    try:
        admin = DbTarget("127.0.0.1", srv.port, "postgres", "pw", "postgres")
        yield srv, admin, seeded_database(_settings(), admin)
    finally:
        _signal_cluster(srv, signal.SIGCONT)
        srv.stop("immediate")


@pytest.fixture
def paused_later(pausable_server) -> Iterator[tuple[Cli, EmbeddedServer]]:
    """The CLI on a fresh clone of the seeded database, on the server a test may pause;
    the server is resumed and the clone dropped afterwards."""
    from moviectl.core import testdb

    srv, admin, seeded = pausable_server
    db = testdb.create(_settings(), target=admin, template=seeded)
    url = db.full_url or ""
    cli = Cli({"MOVIE_DATABASE_URL": url, "MOVIE_STALL_TIMEOUT": "2", "MOVIE_CONNECT_TIMEOUT": "1"})
    try:
        yield cli, srv
    finally:
        _signal_cluster(srv, signal.SIGCONT)
        with connect(admin) as c:  # a restore into it leaves a database without the mark
            drop_database_force(c, db.name)


def _settings() -> Settings:
    return load_settings(use_dotenv=False)


def _signal_cluster(srv: EmbeddedServer, sig: int) -> None:
    pid = srv.state().pid
    if pid is None:
        return
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(sig)


def _children_named(pid: int, name: str) -> list[psutil.Process]:
    try:
        return [p for p in psutil.Process(pid).children(recursive=True) if p.name() == name]
    except psutil.Error:
        return []


# A hang would take the whole 60 s wait: giving up takes a few 2 s stall and 1 s connect
# timeouts (the stall, the cancel, marking the run failed): ~14 s at load 12 on 2 cores.
GIVES_UP_WITHIN = 45


def _pause_mid_run(
    srv: EmbeddedServer, cli: Cli, args: list[str], ready: Any, what: str
) -> tuple[Any, str, float, Any]:
    """Start ``moviectl ARGS``; once ``ready()`` holds, pause the server (SIGSTOP) and wait
    for moviectl to give up. (the process, its stderr, seconds from the pause to its exit,
    what ``ready()`` returned). The server is resumed and moviectl killed whatever happens."""
    cmd = [sys.executable, "-m", "moviectl", *args]
    proc = subprocess.Popen(cmd, env=subprocess_env(**cli.env), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: ready(proc)), what
        seen = ready(proc)
        _signal_cluster(srv, signal.SIGSTOP)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        return proc, err, time.monotonic() - started, seen
    finally:
        if proc.poll() is None:
            proc.kill()
        _signal_cluster(srv, signal.SIGCONT)


def test_backup_of_a_paused_server_fails_with_3_in_bounded_time(paused_later, tmp_path):
    cli, srv = paused_later
    out = tmp_path / "out"
    out.mkdir()
    proc, err, took, dumps = _pause_mid_run(
        srv,
        cli,
        ["backup", "--output", str(out)],
        lambda p: _children_named(p.pid, "pg_dump"),
        "pg_dump never started",
    )
    assert proc.returncode == 3, err
    assert "stopped answering" in err and took < GIVES_UP_WITHIN
    assert wait_for(lambda: not any(d.is_running() for d in dumps), 10)
    assert list(out.iterdir()) == []


def test_seed_into_a_paused_server_fails_with_3_in_bounded_time(paused_later):
    cli, srv = paused_later
    url = cli.env["MOVIE_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as c:
        proc, err, took, _ = _pause_mid_run(
            srv,
            cli,
            ["seed", "--sample", "2000000", "--random-seed", "7"],
            lambda p: c.execute(
                "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'COPY movies%%'"
            ).fetchone(),
            "the COPY never started",
        )
    assert proc.returncode == 3, err
    assert took < GIVES_UP_WITHIN, took
    with psycopg.connect(url) as c:  # all or nothing: the movies seeded before, no more
        assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == SEEDED_MOVIES


def test_tcp_liveness_reaches_the_child_tools():
    info = DbTarget("h", 5432, "u", "secret", "movies").child_conninfo()
    assert "keepalives='1'" in info and "tcp_user_timeout=" in info and "secret" not in info


@pytest.mark.parametrize("command", [["restore"], ["backup", "verify"]])
def test_restore_and_drill_against_a_paused_server_fail_with_3_in_bounded_time(
    paused_later, tmp_path, command
):
    cli, srv = paused_later
    r = cli("backup", "--output", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    import json

    path = json.loads(r.stdout)["path"]
    proc, err, took, _ = _pause_mid_run(
        srv,
        cli,
        [*command, path],
        lambda p: _children_named(p.pid, "pg_restore"),
        "no pg_restore",
    )
    assert proc.returncode == 3, err
    assert "stopped answering" in err and took < GIVES_UP_WITHIN, (took, err)


def _parallel_restore(proc: Any) -> list[psutil.Process]:
    """The load's pg_restore -j and its forked workers, once the workers run."""
    for tool in _children_named(proc.pid, "pg_restore"):
        with contextlib.suppress(psutil.Error):
            if "-j" in tool.cmdline() and tool.children():
                return [tool, *tool.children()]
    return []


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="one core: no -j")
def test_a_paused_server_under_a_parallel_restore_leaves_no_pg_restore(paused_later, tmp_path):
    """The default restore runs pg_restore -j: its workers' I/O is its progress, and on a
    stall the leader's whole process group is killed: exit 3 in bounded time, and neither
    the leader nor a worker is left (waiting on the paused server for ever)."""
    cli, srv = paused_later
    r = cli("backup", "--output", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    import json

    path = json.loads(r.stdout)["path"]
    cmd = [sys.executable, "-m", "moviectl", "restore", path]
    proc = subprocess.Popen(cmd, env=subprocess_env(**cli.env), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: _parallel_restore(proc)), "no pg_restore -j with workers"
        tools = _parallel_restore(proc)
        _signal_cluster(srv, signal.SIGSTOP)
        started = time.monotonic()
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
        # still paused: a worker left blocked on the server would be running now
        gone = wait_for(lambda: not any(t.is_running() for t in tools), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        _signal_cluster(srv, signal.SIGCONT)
    assert proc.returncode == 3, err
    assert "stopped answering" in err and took < GIVES_UP_WITHIN, (took, err)
    assert len(tools) >= 2 and gone, tools
