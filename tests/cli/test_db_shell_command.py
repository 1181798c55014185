"""`moviectl db shell -c SQL`: one statement through pgcli or psql, against a real server,
with the password never on the client's command line."""

from __future__ import annotations

import pytest

from tests.conftest import run_moviectl, subprocess_env

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("client", [[], ["--psql"]], ids=["pgcli", "psql"])
def test_db_shell_runs_one_statement_and_exits(movie_db_url, client):
    env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url, TERM="dumb", PAGER="cat")
    r = run_moviectl(env, "db", "shell", *client, "-c", "SELECT 41 + 1 AS answer", timeout=90)
    assert r.returncode == 0, r.stderr
    assert "42" in r.stdout and "answer" in r.stdout
    # an SQL error is the client's exit code (psql: 1), and nothing hangs on a prompt
    r = run_moviectl(env, "db", "shell", *client, "-c", "SELECT * FROM no_such_table", timeout=90)
    assert "no_such_table" in r.stdout + r.stderr
