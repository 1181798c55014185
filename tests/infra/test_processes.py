"""infra/processes.py: ``pid_alive`` on real child processes."""

from __future__ import annotations

import os
import subprocess
import sys

from moviectl.infra.processes import pid_alive
from tests.conftest import wait_for


def _child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_a_running_child_is_alive_and_named_by_its_program():
    child = _child()
    try:
        assert pid_alive(child.pid)
        # between fork and exec the child still reads as its parent (pytest): under load
        # that moment is long enough to be seen
        assert wait_for(lambda: pid_alive(child.pid, "time.sleep(60)"), timeout=30)
        assert not pid_alive(child.pid, "postgres")  # alive, but not the program expected
    finally:
        child.kill()
        child.wait()


def test_a_reaped_child_is_dead():
    child = _child()
    child.kill()
    child.wait()
    assert not pid_alive(child.pid)


def test_a_zombie_is_dead():
    child = _child()
    child.kill()
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
        assert not pid_alive(child.pid)
    finally:
        child.wait()


def test_this_process_is_alive_and_no_pid_is_not():
    assert pid_alive(os.getpid())
    assert not pid_alive(0) and not pid_alive(-1)


def test_children_that_are_not_moviectl_get_no_secret(monkeypatch):
    """The server, pgAdmin and its installer inherit this: no password, URL or S3 key."""
    from moviectl.infra.processes import env_without_secrets

    for name in ("MOVIE_DB_PASSWORD", "PGPASSWORD", "AWS_SECRET_ACCESS_KEY", "movie_database_url"):
        monkeypatch.setenv(name, "s3cret")
    monkeypatch.setenv("VIRTUAL_ENV", "/v")
    monkeypatch.setenv("HOME_LIKE", "kept")
    env = env_without_secrets("VIRTUAL_ENV")
    assert "s3cret" not in env.values() and "VIRTUAL_ENV" not in env
    assert env["HOME_LIKE"] == "kept"
