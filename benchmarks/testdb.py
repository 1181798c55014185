"""Test databases: clones against CREATE DATABASE + migrations, and the pytest tiers."""

from __future__ import annotations

import secrets
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ALEMBIC,
    ROOT,
    load1,
    pytest_project,
    row,
    run,
)
from moviectl.infra.settings import Settings, load_settings


def bench_testdb(settings: Settings, admin_url: str, env: dict[str, str]) -> None:
    """A clone of the migrated template against CREATE DATABASE + `alembic upgrade head`:
    40 clones, a fresh database after every 8th (alternating, 5 of them)."""
    import psycopg

    from moviectl.core import testdb
    from moviectl.infra.settings import parse_db_url

    since = load1()
    admin = parse_db_url(admin_url)
    tpl = testdb.ensure_template(settings, admin)
    names: list[str] = []
    clones: list[float] = []
    fresh: list[float] = []
    with psycopg.connect(admin_url, autocommit=True) as conn:  # as the pytest plugin holds one
        for i in range(40):
            t = time.perf_counter()
            names.append(testdb.create(settings, target=admin, template=tpl, conn=conn).name)
            clones.append(time.perf_counter() - t)
            if i % 8 == 7:
                name = f"bench_{secrets.token_hex(4)}"
                t = time.perf_counter()
                conn.execute(f'CREATE DATABASE "{name}"')
                url = admin.with_database(name).url(masked=False)
                run([ALEMBIC, "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
                    {**env, "MOVIE_DATABASE_URL": url})  # fmt: skip
                fresh.append(time.perf_counter() - t)
                conn.execute(f'DROP DATABASE "{name}"')
    testdb.drop(settings, names, target=admin)
    med, peer = statistics.median(clones), statistics.median(fresh)
    row("testdb: fresh migrated database (median)", med, 0.05, "s", "<= 50 ms", med <= 0.05, since)
    row("  p95 of 40", sorted(clones)[37], 0.05, "s", "info", True, since)
    row("testdb vs CREATE DATABASE + alembic upgrade", med, peer, "s", ">= 10x faster",
        peer / med >= 10, since)  # fmt: skip


def bench_tiers(admin_url: str, env: dict[str, str], tmp: Path) -> None:
    """The pytest plugin's two tiers against pytest-postgresql 10, in generated projects.

    Each project runs in its own pytest process on this server; a conftest records pytest's
    own phase durations (setup, call, teardown) per test, so interpreter start-up and
    collection are not in the figures. Tier 1's cost per test is the fixture's: setup +
    teardown of a test using ``movie_session`` minus those of an empty test in the same run
    (pytest-postgresql's ``postgresql`` likewise). Tier 2's wait is the setup phase of a
    test asking for ``movie_db_url`` (fixture request to URL handed over) against the setup
    of pytest-postgresql's ``postgresql`` (a clone of its template, loaded with moviectl's
    migrations); the 30 tests each work ~20 ms (a connection, a committed row, CPU).
    """
    import json

    import psycopg

    from moviectl.core import testdb

    since = load1()

    admin = urllib.parse.urlsplit(admin_url)
    s = load_settings(use_dotenv=False, database_url_test=admin_url)
    conn = psycopg.connect(admin_url, autocommit=True)
    clones: list[str] = []
    files = {
        "pytest.ini": "[pytest]\naddopts = -p no:cacheprovider -p no:randomly\n",
        "conftest.py": """
            import json, os
            TIMES = {}

            def pytest_runtest_logreport(report):
                TIMES.setdefault(report.nodeid, {})[report.when] = report.duration

            def pytest_sessionfinish(session):
                with open(os.environ["TIERS_OUT"], "w") as fh:
                    json.dump(TIMES, fh)
            """,
        "test_0_empty.py": """
            import pytest

            @pytest.mark.parametrize("n", range(300))
            def test_empty(n):
                pass
            """,
        "test_tier1.py": """
            import pytest
            from sqlalchemy import text

            @pytest.mark.parametrize("n", range(300))
            def test_tier1(movie_session, n):
                movie_session.execute(
                    text("INSERT INTO movies (title, year, genre) VALUES (:t, 2000, 'Drama')"),
                    {"t": f"m{n}"},
                )
                movie_session.commit()
                assert movie_session.execute(text("SELECT count(*) FROM movies")).scalar() == 1
            """,
        "test_tier2.py": """
            import time
            import psycopg
            import pytest

            @pytest.mark.parametrize("n", range(30))
            def test_tier2(movie_db_url, n):
                start = time.perf_counter()
                with psycopg.connect(movie_db_url) as conn:
                    conn.execute(
                        "INSERT INTO movies (title, year, genre) VALUES ('x', 2000, 'Drama')"
                    )
                    conn.commit()
                    assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == 1
                while time.perf_counter() - start < 0.02:  # the rest of 20 ms: CPU
                    pass
            """,
    }
    peer = {
        "conftest.py": files["conftest.py"]
        + f"""
            from pytest_postgresql import factories

            def load_migrations(host, port, user, dbname, password, **_):
                from moviectl.core.migrations import runner
                from moviectl.infra.settings import Settings, load_settings

                url = f"postgresql://{{user}}:{{password}}@{{host}}:{{port}}/{{dbname}}"
                runner.upgrade(load_settings(use_dotenv=False, database_url=url))

            postgresql_noproc = factories.postgresql_noproc(
                host={admin.hostname!r}, port={admin.port}, user={admin.username!r},
                password={admin.password!r}, dbname="ppg_bench", load=[load_migrations],
            )
            postgresql = factories.postgresql("postgresql_noproc")
            """,
        "test_0_empty.py": files["test_0_empty.py"],
        "test_tier1.py": """
            import pytest

            @pytest.mark.parametrize("n", range(300))
            def test_tier1(postgresql, n):
                postgresql.execute(
                    "INSERT INTO movies (title, year, genre) VALUES (%s, 2000, 'Drama')", (f"m{n}",)
                )
                postgresql.commit()
                assert postgresql.execute("SELECT count(*) FROM movies").fetchone()[0] == 1
            """,
        "test_tier2.py": files["test_tier2.py"]
        .replace("movie_db_url, n", "postgresql, n")
        .replace("psycopg.connect(movie_db_url) as conn", "postgresql as conn"),
    }

    def pytest_run(d: Path, *test_files: str) -> dict[str, dict[str, float]]:
        out = d / "times.json"
        e = {**env, "TIERS_OUT": str(out), "PYTHONPATH": str(ROOT)}
        run([sys.executable, "-m", "pytest", "-q", "-n", "0", *test_files], e, cwd=d)
        return dict(json.loads(out.read_text()))

    def phases(times: dict[str, dict[str, float]], prefix: str, *whens: str) -> list[float]:
        return [sum(t[w] for w in whens) for k, t in times.items() if f"::{prefix}[" in k]

    def ms(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    dirs = {
        "moviectl": pytest_project(tmp / "moviectl", files),
        "pytest_postgresql": pytest_project(tmp / "ppg", peer),
    }
    # Alternating: ours tier 1, the peer's tier 1, ours tier 2, the peer's tier 2.
    ones = {name: pytest_run(d, "test_0_empty.py", "test_tier1.py") for name, d in dirs.items()}
    twos = {name: pytest_run(d, "test_tier2.py") for name, d in dirs.items()}
    results: dict[str, dict[str, Any]] = {}
    for name in dirs:
        one, two = ones[name], twos[name]
        empty = ms(phases(one, "test_empty", "setup", "teardown"))
        results[name] = {
            "cost": ms(phases(one, "test_tier1", "setup", "teardown")[1:]) - empty,
            "whole": ms(phases(one, "test_tier1", "setup", "call", "teardown")[1:]),
            "empty": empty,
            "wait": ms(phases(two, "test_tier2", "setup")),
            "wait_p90": sorted(phases(two, "test_tier2", "setup"))[26] * 1000,
            "teardown": ms(phases(two, "test_tier2", "teardown")),
            "wait_sum": sum(phases(two, "test_tier2", "setup")) * 1000,
            "waits": [round(x * 1000, 1) for x in phases(two, "test_tier2", "setup")],
        }
    ours, them = results["moviectl"], results["pytest_postgresql"]
    print(f"tiers: {json.dumps(results)}")
    took = []
    for _ in range(9):
        t = time.perf_counter()
        clones.append(testdb.create(s, conn=conn).name)
        took.append(time.perf_counter() - t)
    clone = statistics.median(took)
    testdb.drop(s, clones)
    conn.close()
    row("tier 1: fixture cost per test, 300 tests", ours["cost"], 3.0, "ms", "<= 3 ms",
        ours["cost"] <= 3.0, since)  # fmt: skip
    row("tier 1 vs pytest-postgresql, per test", ours["cost"], them["cost"], "ms",
        ">= 10x faster", ours["cost"] * 10 <= them["cost"], since)  # fmt: skip
    row("  (whole test: setup+call+teardown, median)", ours["whole"], them["whole"], "ms",
        "info", True, since)  # fmt: skip
    row("tier 2: wait per test (median), 30 x 20 ms", ours["wait"], 10.0, "ms", "<= 10 ms",
        ours["wait"] <= 10.0, since)  # fmt: skip
    row("tier 2 vs pytest-postgresql, wait (median)", ours["wait"], them["wait"], "ms",
        ">= 4x faster", ours["wait"] * 4 <= them["wait"], since)  # fmt: skip
    row("  (tier 2 wait p90)", ours["wait_p90"], them["wait_p90"], "ms", "info", True, since)
    row(
        "  (tier 2 teardown, median)", ours["teardown"], them["teardown"], "ms", "info", True, since
    )
    row("  (tier 2: the first test's wait; ours fills the pool)", ours["waits"][0],
        them["waits"][0], "ms", "info", True, since)  # fmt: skip
    row("  (tier 2 waits, all 30 added up)", ours["wait_sum"], them["wait_sum"], "ms", "info",
        True, since)  # fmt: skip
    row("  (one clone on this server now, median)", clone * 1000, 20.0, "ms",
        "info: a test's ~20 ms of work hides it when below", True, since)  # fmt: skip
