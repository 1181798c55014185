"""Logins one after another under a CONNECTION LIMIT 1 (infra/backend_exit.py): a closed
connection's server process counts against the limit until it has exited, so without the
wait the next login was sometimes refused "too many connections for role" (seen in CI: a
restore as such a role)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest

from moviectl.infra.conninfo import DbTarget, parse_db_url
from moviectl.infra.engine import connect, make_engine
from moviectl.infra.pgtools import child_env, popen_child, wheel_bin_dir
from moviectl.infra.settings import load_settings

# temporary tables: the server process drops them as it exits, after the client has gone
_SLOW_EXIT = (
    "DO $$BEGIN FOR i IN 1..200 LOOP EXECUTE format('CREATE TEMP TABLE t%s ()', i); END LOOP; END$$"
)


@pytest.fixture
def limited(movie_db_url: str) -> Iterator[DbTarget]:
    """A login role of CONNECTION LIMIT 1, on the test's database."""
    name, pw = f"lim_{secrets.token_hex(4)}", f"Pw-{secrets.token_hex(8)}"
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{pw}' CONNECTION LIMIT 1")
    yield replace(parse_db_url(movie_db_url), user=name, password=pw)
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute(f"DROP ROLE {name}")


def test_a_login_right_after_a_close_finds_the_slot_free(limited: DbTarget) -> None:
    for _ in range(20):
        with connect(limited) as c:
            c.execute(_SLOW_EXIT)
        with connect(limited):
            pass


def test_a_tool_started_right_after_a_close_finds_the_slot_free(limited: DbTarget) -> None:
    bin_dir = wheel_bin_dir()
    if bin_dir is None:
        pytest.skip("no embedded PostgreSQL tools")
    for _ in range(20):
        with connect(limited) as c:
            c.execute(_SLOW_EXIT)
        psql = popen_child(
            [str(bin_dir / "psql"), "-XAtc", "SELECT 1", "-d", limited.child_conninfo()],
            env=child_env(limited),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = psql.communicate(timeout=30)
        assert psql.returncode == 0 and out.strip() == "1", err


def test_the_engine_logs_in_after_a_close_and_its_close_is_waited_for(limited: DbTarget) -> None:
    """``migrate`` logs in by ``connect`` (require_session), then by the engine
    (current_revision), then by ``connect`` again: each login must find the slot free."""
    engine = make_engine(load_settings(), target=limited, pooled=False)
    try:
        for _ in range(10):
            with connect(limited) as c:
                c.execute(_SLOW_EXIT)
            with engine.connect() as ec:
                ec.exec_driver_sql(_SLOW_EXIT.replace("%", "%%"))  # no parameters
                ec.commit()
    finally:
        engine.dispose()
    with connect(limited):
        pass


def test_a_process_exits_without_warning_of_the_sockets_it_kept(movie_db_url: str) -> None:
    code = (
        "import os; from moviectl.infra.conninfo import parse_db_url;"
        "from moviectl.infra.engine import connect;"
        "connect(parse_db_url(os.environ['URL'])).close()"
    )
    r = subprocess.run(  # the URL, password and all, in the environment: never in argv
        [sys.executable, "-X", "dev", "-c", code],
        env={**os.environ, "URL": str(movie_db_url)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0 and "ResourceWarning" not in r.stderr, r.stderr
