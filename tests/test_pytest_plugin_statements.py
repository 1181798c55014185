"""Tier 1 at the floor: what the fixtures send per test, read off libpq's own protocol trace
(``PQtrace`` through psycopg's ``pgconn.trace``), in a pytester run of the plugin."""

from __future__ import annotations

import json

pytest_plugins = ["pytester"]

CONFTEST = """
import json, os, re, tempfile
import pytest
from psycopg import pq

SHARED = {}
TRACES = {}

@pytest.fixture
def warm(moviectl_shared_db):
    SHARED["db"] = moviectl_shared_db  # its connection is held for the session

def _pgconn():
    return SHARED["db"].connection().connection.dbapi_connection.pgconn

@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if item.name.startswith("test_counted"):
        fd, path = tempfile.mkstemp()
        pgconn = _pgconn()
        pgconn.trace(fd)
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        item.stash_trace = (pgconn, fd, path)
    return (yield)

@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    if hasattr(item, "stash_trace"):
        pgconn, fd, path = item.stash_trace
        pgconn.untrace()
        os.close(fd)
        sent, parsed = [], None  # one entry per round trip: a Query, or a Sync
        for line in open(path).read().splitlines():
            parts = line.split("\\t")  # F(rontend)|B(ackend), length, message, fields
            if parts[0] != "F" or len(parts) < 3:
                continue
            first = (re.findall(r'"([^"]*)"', parts[-1]) or [""])[-1].split()[:1]
            if parts[2] == "Query":
                sent.append(first[0].upper())
            elif parts[2] == "Parse":
                parsed = first[0].upper()
            elif parts[2] == "Sync":
                sent.append(parsed or "PREPARED")  # no Parse: a statement prepared before
                parsed = None
        os.unlink(path)
        TRACES[item.name] = sent
    return result

def pytest_sessionfinish(session):
    with open(os.environ["TRACES_OUT"], "w") as fh:
        json.dump(TRACES, fh)
"""

TESTS = """
from sqlalchemy import text

def test_0_warm(warm, movie_connection):
    pass

def test_counted_nothing(movie_session):
    pass

def test_counted_hand_written(movie_connection):
    movie_connection.execute(text("INSERT INTO movies (title, year, genre) VALUES ('x', 2000, 'Drama')"))
    assert movie_connection.execute(text("SELECT count(*) FROM movies")).scalar() == 1

def test_counted_session(movie_session):
    movie_session.execute(text("INSERT INTO movies (title, year, genre) VALUES ('x', 2000, 'Drama')"))
    assert movie_session.execute(text("SELECT count(*) FROM movies")).scalar() == 1

def test_counted_session_that_commits(movie_session):
    movie_session.execute(text("INSERT INTO movies (title, year, genre) VALUES ('x', 2000, 'Drama')"))
    movie_session.commit()
    assert movie_session.execute(text("SELECT count(*) FROM movies")).scalar() == 1
"""


def test_tier1_sends_a_begin_and_a_rollback_around_the_tests_own_statements(
    pytester, moviectl_admin_target, monkeypatch, tmp_path
):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    out = tmp_path / "traces.json"
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    monkeypatch.setenv("TRACES_OUT", str(out))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0")
    result.assert_outcomes(passed=5)
    sent = json.loads(out.read_text())
    assert sent["test_counted_nothing"] == []  # a test that sends nothing costs nothing
    hand = ["BEGIN", "INSERT", "SELECT", "ROLLBACK"]  # what a hand-written rollback sends
    assert sent["test_counted_hand_written"] == hand
    assert sent["test_counted_session"] == hand
    # the test asked for a commit: one savepoint, where there were 4 statements more
    commits = ["BEGIN", "INSERT", "SAVEPOINT", "SELECT", "ROLLBACK"]
    assert sent["test_counted_session_that_commits"] == commits
