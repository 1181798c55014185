"""The plugin's tier-2 pool and its fast server, as another project would run them."""

from __future__ import annotations

import json

from moviectl.infra.ports import port_is_free

pytest_plugins = ["pytester"]

WATCHER = """
import json, os, threading, time
import pytest
from moviectl.core import testdb
from moviectl.infra import admin
from moviectl.infra.engine import connect

SEEN = []

@pytest.fixture(scope="session", autouse=True)
def watch(moviectl_admin_target, moviectl_clone_pool):
    # an outside look: this run's pool clones on the server, every few milliseconds
    mine, stop = testdb.pool_owner_tag(), threading.Event()

    def loop():
        with connect(moviectl_admin_target) as conn:
            while not stop.is_set():
                rows = admin.databases_named_like(conn, testdb.TEST_PREFIX)
                SEEN.append(sum((r["mark"] or {}).get("owner") == mine for r in rows))
                time.sleep(0.005)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join(10)
    with open(os.environ["POOL_OUT"], "w") as fh:
        json.dump({"seen": max(SEEN), "polls": len(SEEN), "peak": moviectl_clone_pool.peak,
                   "made": moviectl_clone_pool.made, "size": moviectl_clone_pool.size}, fh)
"""

FORTY = """
import psycopg
import pytest

@pytest.mark.parametrize("n", range(40))
def test_own_database(movie_db_url, n):
    with psycopg.connect(movie_db_url) as conn:
        conn.execute("INSERT INTO movies (title, year, genre) VALUES ('x', 2000, 'Drama')")
"""


def test_forty_tests_never_hold_more_clones_than_the_pool_size_plus_those_in_use(
    pytester, moviectl_admin_target, monkeypatch, tmp_path
):
    pytester.makeconftest(WATCHER)
    pytester.makeini("[pytest]\nmoviectl_pool_size = 3\n")
    pytester.makepyfile(FORTY)
    out = tmp_path / "pool.json"
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    monkeypatch.setenv("POOL_OUT", str(out))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
    result.assert_outcomes(passed=40)
    got = json.loads(out.read_text())
    assert got["size"] == 3 and got["made"] == 40 and got["polls"] > 10, got
    assert got["seen"] <= 3 + 2, got  # the watcher's count: size + the test's own + slack
    assert got["peak"] <= 3 + 1, got  # the pool's own count: size + the one in use


FAST = """
import psycopg

def test_on_the_fast_server(movie_db_url, moviectl_admin_target):
    with psycopg.connect(movie_db_url) as conn:
        got = {k: conn.execute(f"SHOW {k}").fetchone()[0]
               for k in ("fsync", "synchronous_commit", "full_page_writes")}
        assert got == {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == 0
    print(f"\\nFAST PORT={moviectl_admin_target.port}")
"""


def test_the_fast_server_option_starts_a_throwaway_cluster_and_removes_it(
    pytester, moviectl_admin_target, monkeypatch
):
    pytester.makepyfile(FAST)
    # the variable names another server: fast ignores it, and it stays untouched
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    for how in (["--moviectl-server=fast"], ["-o", "moviectl_server=fast"]):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0", "-s", *how)
        result.assert_outcomes(passed=1)
        line = next(ln for ln in result.stdout.lines if ln.startswith("FAST PORT="))
        port = int(line.split("=")[1])
        assert port != moviectl_admin_target.port
        assert port_is_free("127.0.0.1", port)  # stopped at the session's end


def test_a_bad_server_kind_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x(movie_db_url):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-o", "moviectl_server=big")
    result.stdout.fnmatch_lines(["*moviectl_server must be url or fast: big*"])
    assert result.ret != 0
