"""The pytest plugin's tier-2 pool and tier 1 against a hand-written conftest that clones a
database per test (issue 32), whole pytest runs in generated projects.

- Tier 1: 200 short tests on ``movie_session`` against the same 200 tests on a conftest
  that makes a database per test (``CREATE DATABASE … TEMPLATE`` the migrated template,
  dropped after), one worker: whole-run wall time (goal <= 0.3x).
- Tier 2: the template grown to ~115 MB (movies rows), 200 short tests on ``movie_db_url``
  against the same conftest on that template, with ``-n 0`` and ``-n 2``: whole-run wall
  time (goal <= 0.5x), the peak number of clones alive at once (polled on the server every
  20 ms; goal: each worker's pool size + 2, per worker), and the first test's wait (its
  setup phase, as pytest measures it) against one clone of that template made by hand
  (goal <= 1x).

The goal rows' peer is the conftest people write: a plain ``CREATE DATABASE … TEMPLATE``
(PostgreSQL's default WAL_LOG copy). Info rows set the pool against the same conftest
cloning with the plugin's own statement (``FILE_COPY`` where fsync is off), so what the
pool adds apart from how it copies is printed beside.
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, load1, pytest_project, row, run

TESTS = 200
POOL_SIZE = 4  # the plugin's default moviectl_pool_size
TEMPLATE_MB = 115

CONFTEST_TIMES = """
    import json, os
    TIMES = {}

    def pytest_runtest_logreport(report):
        TIMES.setdefault(report.nodeid, {})[report.when] = report.duration

    def pytest_sessionfinish(session):
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        with open(os.environ["POOL_OUT"] + "." + worker, "w") as fh:
            json.dump(TIMES, fh)
    """
HAND_FIXTURE = """
    import os, secrets, psycopg, pytest

    @pytest.fixture
    def db_url():
        admin, tpl = os.environ["POOL_ADMIN"], os.environ["POOL_TPL"]
        name = "hand_" + secrets.token_hex(6)
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}" TEMPLATE "{tpl}"' + os.environ["POOL_STRATEGY"])
        yield admin.rsplit("/", 1)[0] + "/" + name
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    """
TIER1_TEST = f"""
    import pytest
    from sqlalchemy import text

    @pytest.mark.parametrize("n", range({TESTS}))
    def test_short(movie_session, n):
        assert movie_session.execute(text("SELECT count(*) >= 0 FROM movies")).scalar()
    """
TIER2_TEST = f"""
    import psycopg, pytest

    @pytest.mark.parametrize("n", range({TESTS}))
    def test_short(movie_db_url, n):
        with psycopg.connect(movie_db_url) as c:
            assert c.execute("SELECT count(*) >= 0 FROM movies").fetchone()[0]
    """
HAND_TEST = f"""
    import psycopg, pytest

    @pytest.mark.parametrize("n", range({TESTS}))
    def test_short(db_url, n):
        with psycopg.connect(db_url) as c:
            assert c.execute("SELECT count(*) >= 0 FROM movies").fetchone()[0]
    """


INI = f"[pytest]\naddopts = -p no:cacheprovider -p no:randomly\nmoviectl_pool_size = {POOL_SIZE}\n"


def _project(d: Path, conftest: str, test: str) -> Path:
    return pytest_project(d, {"pytest.ini": INI, "conftest.py": conftest, "test_pool.py": test})


class PeakClones:
    """The most databases named ``prefix``… alive at once, polled every 20 ms."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        import psycopg

        self.conn = psycopg.connect(admin_url, autocommit=True)
        self.prefix, self.peak, self.stop = prefix, 0, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        q = "SELECT count(*) FROM pg_database WHERE starts_with(datname, %s)"
        while not self.stop.is_set():
            n = int(self.conn.execute(q, (self.prefix,)).fetchone()[0])  # type: ignore[index]
            self.peak = max(self.peak, n)
            self.stop.wait(0.02)

    def __enter__(self) -> PeakClones:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


def _pytest(d: Path, env: dict[str, str], workers: int) -> tuple[float, list[float]]:
    """Wall seconds of the whole run, and every test's setup seconds in run order (per
    worker, concatenated: a worker's first test is the first of its list)."""
    out = d / "times"
    for old in d.glob("times.*"):
        old.unlink()
    e = {**env, "POOL_OUT": str(out), "PYTHONPATH": str(ROOT)}
    took, _ = run([sys.executable, "-m", "pytest", "-q", "-n", str(workers)], e, cwd=d)
    setups: list[float] = []
    for f in sorted(d.glob("times.*")):
        times: dict[str, dict[str, float]] = json.loads(f.read_text())
        setups += [t["setup"] for t in times.values()]
    return took, setups


def _grow_template(admin_url: str, tpl: str) -> float:
    """Fill the migrated template with movies until it is ~TEMPLATE_MB; its size in MB."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{tpl}" ALLOW_CONNECTIONS true')
        try:
            with psycopg.connect(admin_url.rsplit("/", 1)[0] + "/" + tpl, autocommit=True) as c:
                while _mb(c, tpl) < TEMPLATE_MB:
                    c.execute(
                        "INSERT INTO movies (title, year, genre) SELECT 'film ' || g,"
                        " 1950 + g % 70, 'Drama' FROM generate_series(1, 100000) g"
                    )
                c.execute("VACUUM ANALYZE movies")
                size = _mb(c, tpl)
        finally:
            admin.execute(f'ALTER DATABASE "{tpl}" ALLOW_CONNECTIONS false')
    return size


def _one_clone(admin_url: str, tpl: str, strategy: str) -> float:
    """Median seconds of five clones of ``tpl`` by hand, each dropped after."""
    import psycopg

    took = []
    with psycopg.connect(admin_url, autocommit=True) as c:
        for n in range(5):
            t = time.perf_counter()
            c.execute(f'CREATE DATABASE "pool_probe_{n}" TEMPLATE "{tpl}"{strategy}')
            took.append(time.perf_counter() - t)
            c.execute(f'DROP DATABASE "pool_probe_{n}"')
    return statistics.median(took)


def _mb(conn: Any, name: str) -> float:
    return float(conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()[0]) / 2**20


def bench_pool(admin_url: str, env: dict[str, str], tmp: Path, rounds: int) -> None:
    """Tier 1 and the tier-2 pool against the hand-written conftest (module docstring)."""
    import psycopg

    from moviectl.core import testdb
    from moviectl.infra.admin import TEST_PREFIX, clone_strategy
    from moviectl.infra.settings import load_settings

    settings = load_settings(use_dotenv=False, database_url_test=admin_url)
    tpl = testdb.ensure_template(settings)
    with psycopg.connect(admin_url, autocommit=True) as c:
        strategy = clone_strategy(c)
    hand_env = {**env, "POOL_ADMIN": admin_url, "POOL_TPL": tpl, "POOL_STRATEGY": ""}
    same_env = {**hand_env, "POOL_STRATEGY": strategy}  # the plugin's own statement
    times = CONFTEST_TIMES
    ours1 = _project(tmp / "pool-tier1", times, TIER1_TEST)
    ours2 = _project(tmp / "pool-tier2", times, TIER2_TEST)
    hand = _project(tmp / "pool-hand", times + HAND_FIXTURE, HAND_TEST)

    since = load1()
    t1: list[float] = []
    h1: list[float] = []
    for _ in range(rounds):  # alternating
        t1.append(_pytest(ours1, env, 0)[0])
        h1.append(_pytest(hand, hand_env, 0)[0])
    a, b = statistics.median(t1), statistics.median(h1)
    row(f"tier 1 vs a conftest cloning a database per test, {TESTS} tests, whole run", a, b,
        "s", "<= 0.3x", a / b <= 0.3, since)  # fmt: skip

    size = _grow_template(admin_url, tpl)
    try:
        clone, same = _one_clone(admin_url, tpl, ""), _one_clone(admin_url, tpl, strategy)
        print(
            f"  template {tpl}: {size:.0f} MB; one clone of it {clone * 1000:.0f} ms, "
            f"{same * 1000:.0f} ms with{strategy or ' the default strategy'}",
            flush=True,
        )
        for workers in (0, 2):
            since = load1()
            ours: list[float] = []
            theirs: list[float] = []
            alike: list[float] = []
            peaks: list[int] = []
            first: list[float] = []
            for _ in range(rounds):
                with PeakClones(admin_url, TEST_PREFIX) as peak:
                    took, setups = _pytest(ours2, env, workers)
                ours.append(took)
                peaks.append(peak.peak)
                first.append(setups[0])
                theirs.append(_pytest(hand, hand_env, workers)[0])
                alike.append(_pytest(hand, same_env, workers)[0])
            a, b = statistics.median(ours), statistics.median(theirs)
            label = f"-n {workers}" if workers else "one worker"
            row(f"pool: {TESTS} tests on a {size:.0f} MB template, {label}, whole run vs a "
                "conftest cloning per test", a, b, "s", "<= 0.5x", a / b <= 0.5, since)  # fmt: skip
            c = statistics.median(alike)
            row(f"  the same, the conftest cloning with the plugin's statement, {label}", a, c,
                "s", "info: the pool alone", True, since)  # fmt: skip
            bound = (POOL_SIZE + 2) * max(workers, 1)  # the pool size is a worker's
            row(f"  peak clones alive at once, {label} (most of {rounds})", max(peaks), bound,
                "", f"<= {bound}", max(peaks) <= bound, since)  # fmt: skip
            if not workers:
                f = statistics.median(first)
                row("  the first test's wait vs one clone of the template", f, clone, "s",
                    "<= 1x", f <= clone, since)  # fmt: skip
                row("  the same, vs one clone with the plugin's statement", f, same, "s",
                    "info", True, since)  # fmt: skip
    finally:
        with psycopg.connect(admin_url, autocommit=True) as c:  # the next rows' template
            c.execute(f'ALTER DATABASE "{tpl}" WITH IS_TEMPLATE false')
            c.execute(f'DROP DATABASE "{tpl}" WITH (FORCE)')
