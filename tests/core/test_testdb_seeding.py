"""`testdb create --seed-sample N` interrupted (issue 26 item 5): Ctrl-C or SIGTERM drop the
half-seeded database on the way out; after kill -9 its mark says it was being seeded, by a
process that is gone, and `testdb prune` drops it. A finished one keeps its own expiry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from datetime import datetime, timedelta

import psycopg
import pytest

from moviectl.infra import admin
from moviectl.infra.conninfo import DbTarget
from tests.conftest import Cli, subprocess_env, wait_for


def _marks(target: DbTarget, pid: int) -> dict[str, dict[str, object]]:
    """The test databases a process with ``pid`` made, by name, with their marks."""
    with psycopg.connect(**target.libpq_params(), autocommit=True) as conn:
        return {
            row["name"]: row["mark"] or {}
            for row in admin.databases_named_like(conn, "movies_test_")
            if str((row["mark"] or {}).get("owner", "")).endswith(f" pid {pid}")
        }


def _start(target: DbTarget, n: int) -> subprocess.Popen[str]:
    url = target.with_database("postgres").url(masked=False)
    return subprocess.Popen(
        [sys.executable, "-m", "moviectl", "testdb", "create", "--seed-sample", str(n)],
        env=subprocess_env(MOVIE_DATABASE_URL=url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_seeded_create_drops_its_database(moviectl_admin_target, sig, code):
    proc = _start(moviectl_admin_target, 2_000_000)
    try:
        seeding = lambda: _marks(moviectl_admin_target, proc.pid)  # noqa: E731
        assert wait_for(seeding, 120), proc.stderr.read() if proc.poll() is not None else ""
        (mark,) = seeding().values()
        assert mark["state"] == "seeding" and mark["expires"]
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _marks(moviectl_admin_target, proc.pid) == {}


def test_after_kill_9_prune_recognises_the_half_seeded_database(moviectl_admin_target):
    proc = _start(moviectl_admin_target, 2_000_000)
    try:
        assert wait_for(lambda: _marks(moviectl_admin_target, proc.pid), 120)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    (name,) = _marks(moviectl_admin_target, proc.pid)
    url = moviectl_admin_target.with_database("postgres").url(masked=False)
    r = Cli({"MOVIE_DATABASE_URL": url})("--json", "testdb", "prune")
    assert r.exit_code == 0, r.output
    assert name in json.loads(r.stdout)["dropped"]
    assert _marks(moviectl_admin_target, proc.pid) == {}


def test_a_finished_seeded_create_keeps_the_expiry_asked_for(moviectl_admin_target):
    url = moviectl_admin_target.with_database("postgres").url(masked=False)
    cli = Cli({"MOVIE_DATABASE_URL": url})
    r = cli("--json", "testdb", "create", "--seed-sample", "5", "--ttl", "2h")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    try:
        with psycopg.connect(**moviectl_admin_target.libpq_params(), autocommit=True) as conn:
            _, comment = admin.database_comment(conn, doc["name"])
        mark = admin.read_mark(comment) or {}
        assert "state" not in mark
        life = datetime.fromisoformat(str(mark["expires"])) - datetime.fromisoformat(
            str(mark["created"])
        )
        assert life == timedelta(hours=2)
    finally:
        assert cli("testdb", "drop", doc["name"], "--yes").exit_code == 0
