"""`moviectl inspect` on a database of 1,000 tables (issue 29: every subcommand <= 0.3 s,
whole process), each against the pg-extras family's Python port where it asks the same
question, and `psql -c` of the same query as the floor of any client.

The peer: `pgextras` (PyPI, "unofficial Python port of Heroku's pgextras"), installed here
into a throwaway virtualenv of its own. `pg-extras` (python-pg-extras, the one the issue
names) cannot be the peer: its last release on PyPI, 0.1.4, ships no query files (its
`PGExtras.query` reads `queries/*.sql` that the wheel lacks) and calls
`Engine.execute`, gone in SQLAlchemy 2. `pgextras` 0.2.1 runs its version-independent
queries on PostgreSQL 18; the ones behind its 9.2 check (locks, blocking, long-running,
calls, outliers) fail there (its version regex wants three numbers), so those subcommands
are measured against the limit alone. (Not named `inspect.py`: run as a script, this
folder is first on sys.path and would shadow the standard library's module.)
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import MOVIECTL, PG, STACK_FLOOR, libpq_env, load1, row
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.ports import free_port

TABLES = 1000
LIMIT = "0.3 s"
# moviectl's subcommand -> pgextras' method asking the same question
PEERS = {
    "cache-hit": "cache_hit",
    "index-usage": "index_usage",
    "seq-scans": "seq_scans",
    "unused-indexes": "unused_indexes",
    "table-sizes": "table_size",
    "index-sizes": "index_size",
    "total-sizes": "total_table_size",
    "bloat": "bloat",
    "vacuum-stats": "vacuum_stats",
}
# how pgextras is used: its method's rows, printed
PEER_SCRIPT = (
    "import sys\nfrom pgextras import PgExtras\n"
    "with PgExtras(dsn='') as pg:\n"
    "    for r in getattr(pg, sys.argv[1])(): print(*r, sep='\\t')\n"
)


def make_tables(url: str, tables: int) -> None:
    """``tables`` tables (a primary key and a text column: a TOAST table and an index each,
    a few rows, analysed), one of every ten with a second, never used index; the statements
    land in pg_stat_statements, so `outliers` and `calls` have ~2,000 entries to rank."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for n in range(tables):
            c.execute(f"CREATE TABLE t{n:04} (id int PRIMARY KEY, v text)")
            c.execute(f"INSERT INTO t{n:04} SELECT g, 'v' || g FROM generate_series(1, {n % 50}) g")
            if n % 10 == 0:
                c.execute(f"CREATE INDEX t{n:04}_v ON t{n:04} (v)")
        c.execute("ANALYZE")


def peer_python(tmp: Path) -> Path | None:
    """A virtualenv with pgextras (psycopg2's binary wheel: no compiler needed); None, saying
    why, when it cannot be installed (no registry reachable)."""
    uv = shutil.which("uv")
    venv = tmp / "pgextras-venv"
    if uv is None:
        print("  pgextras not measured: uv is not on PATH", flush=True)
        return None
    try:
        subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        wheels = ["pgextras==0.2.1", "prettytable", "wcwidth", "psycopg2-binary"]
        py = str(venv / "bin" / "python")
        subprocess.run([uv, "pip", "install", "-q", "--python", py, "--no-deps", *wheels],
                       check=True, capture_output=True, timeout=600)  # fmt: skip
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"  pgextras not measured: could not install it ({exc})", flush=True)
        return None
    return venv / "bin" / "python"


def timed(argv: list[str], env: dict[str, str], codes: tuple[int, ...] = (0,)) -> Run:
    """(wall, CPU) seconds of ``argv`` to its end, CPU being the process's user + sys (what a
    busy shared machine distorts least); it must exit with one of ``codes`` (`diagnose`
    exits 1 on warnings)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        took = time.perf_counter() - t
        if (code := os.waitstatus_to_exitcode(status)) not in codes:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} exited {code}:\n{err.read()[-3000:]!r}")
    return took, usage.ru_utime + usage.ru_stime


Run = tuple[float, float]


def median(runs: list[Run], which: int) -> float:
    return statistics.median(r[which] for r in runs)


def in_process(url: str, names: list[str], rounds: int) -> dict[str, float]:
    """Median seconds of each subcommand's connection and queries alone, no start-up."""
    from moviectl.core.inspect.diagnose import Thresholds, diagnose
    from moviectl.core.inspect.model import Options
    from moviectl.core.inspect.registry import run
    from moviectl.infra.settings import load_settings

    settings = load_settings(use_dotenv=False, database_url=url)
    took: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds + 1):  # the first round is the warm-up
        for n in names:
            t = time.perf_counter()
            if n == "diagnose":
                diagnose(settings, Thresholds())
            else:
                run(settings, n, Options(limit=10000))
            took[n].append(time.perf_counter() - t)
    return {n: statistics.median(ts[1:]) for n, ts in took.items()}


def bench_inspect(env: dict[str, str], tmp: Path, rounds: int) -> None:
    """Every subcommand with `--json --limit 10000` (all the rows, as the peer prints them),
    alternating with pgextras' method and `psql -c` of moviectl's own query; the bytecode
    cache warm (one untimed run of each first). The server: one of its own with
    pg_stat_statements preloaded, as production would run it."""
    from moviectl.cli.commands_inspect import HELP

    password = secrets.token_hex(8)
    options = {**TEST_OPTIONS, "shared_preload_libraries": "pg_stat_statements"}
    server = EmbeddedServer(tmp / "pg-inspect", free_port(), "postgres", password, options=options)
    server.start()
    pyc = tempfile.mkdtemp(prefix="bench-pyc-")
    names = [*HELP, "diagnose"]
    try:
        url = f"postgresql://postgres:{password}@127.0.0.1:{server.port}/postgres"
        t = time.perf_counter()
        make_tables(url, TABLES)
        print(f"  {TABLES:,} tables made in {time.perf_counter() - t:.0f} s", flush=True)
        peer = peer_python(tmp)
        # warm as the docstring says: with PYTHONDONTWRITEBYTECODE inherited (this machine
        # sets it) the warm-up wrote nothing and every timed run compiled every module
        base = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        ours_env = {**base, "MOVIE_DATABASE_URL": url, "PYTHONPYCACHEPREFIX": pyc}
        peer_env = {**base, **libpq_env(url), "PYTHONPYCACHEPREFIX": pyc}
        argv = {n: [MOVIECTL, "inspect", n, "--json"] + ([] if n == "diagnose" else
                ["--limit", "10000"]) for n in names}  # fmt: skip
        ok = {n: (0, 1) if n == "diagnose" else (0,) for n in names}
        peer_argv = {n: [str(peer), "-c", PEER_SCRIPT, m] for n, m in PEERS.items() if peer}
        floor_argv = [MOVIECTL, "--version"]
        stack_argv = STACK_FLOOR
        psql_argv = [str(PG / "psql"), "-X", "-A", "-t", "-q", "-c", psql_of_total_sizes()]
        for n in names:  # fill the bytecode cache; see that each one answers
            timed(argv[n], ours_env, ok[n])
            if n in peer_argv:
                timed(peer_argv[n], peer_env)
        timed(floor_argv, ours_env)
        timed(stack_argv, ours_env)
        assert any(Path(pyc).rglob("*.pyc")), "the warm-up wrote no bytecode cache"
        since = load1()
        ours: dict[str, list[Run]] = {n: [] for n in names}
        theirs: dict[str, list[Run]] = {n: [] for n in peer_argv}
        psql: list[Run] = []
        floor: list[Run] = []
        stack: list[Run] = []
        for _ in range(rounds):
            for n in names:
                ours[n].append(timed(argv[n], ours_env, ok[n]))
                if n in peer_argv:
                    theirs[n].append(timed(peer_argv[n], peer_env))
            psql.append(timed(psql_argv, peer_env))
            floor.append(timed(floor_argv, ours_env))
            stack.append(timed(stack_argv, ours_env))
        inside = in_process(url, names, rounds)
    finally:
        server.stop("immediate")
        shutil.rmtree(pyc, ignore_errors=True)
    report(names, ours, theirs, psql, floor, stack, inside, since)


def report(
    names: list[str],
    ours: dict[str, list[Run]],
    theirs: dict[str, list[Run]],
    psql: list[Run],
    floor: list[Run],
    stack: list[Run],
    inside: dict[str, float],
    since: float,
) -> None:
    wall = {n: median(rs, 0) for n, rs in ours.items()}
    for n in names:
        if theirs.get(n):
            row(f"inspect {n} vs pgextras {PEERS[n]}, {TABLES:,} tables", wall[n],
                median(theirs[n], 0), "s", f"<= {LIMIT}", wall[n] <= 0.3, since)  # fmt: skip
        else:
            row(f"inspect {n}, {TABLES:,} tables (no peer)", wall[n], 0.3, "s", f"<= {LIMIT}",
                wall[n] <= 0.3, since)  # fmt: skip
    slowest = max(wall, key=wall.__getitem__)
    row(f"every inspect subcommand: the slowest ({slowest})", wall[slowest], 0.3, "s",
        f"<= {LIMIT}", wall[slowest] <= 0.3, since)  # fmt: skip
    paired = [n for n in names if theirs.get(n)]
    if paired:
        ratios = [wall[n] / median(theirs[n], 0) for n in paired]
        cpu = [median(ours[n], 1) / median(theirs[n], 1) for n in paired]
        row(f"  vs pgextras, median ratio over {len(paired)} subcommands (wall)",
            statistics.median(ratios), 1.0, "x", "info", True, since)  # fmt: skip
        row("  the same in CPU seconds (user + sys)", statistics.median(cpu), 1.0, "x", "info",
            True, since)  # fmt: skip
    row("  inspect total-sizes vs psql -c of its query", wall["total-sizes"], median(psql, 0),
        "s", "info", True, since)  # fmt: skip
    row("  moviectl --version (the CLI's floor) vs total-sizes", median(floor, 0),
        wall["total-sizes"], "s", "info", True, since)  # fmt: skip
    row("  import typer, rich.console, psycopg (the stack's floor) vs 0.3 s", median(stack, 0),
        0.3, "s", "info", True, since)  # fmt: skip
    worst = max(inside, key=inside.__getitem__)
    row(f"  in process, no start-up: the slowest ({worst})", inside[worst], wall[worst], "s",
        "info: vs its whole process", True, since)  # fmt: skip
    print("  CPU s (user+sys), ours: " + ", ".join(
        f"{n} {median(ours[n], 1):.2f}" for n in names), flush=True)  # fmt: skip
    if theirs:
        print("  CPU s, pgextras: " + ", ".join(
            f"{PEERS[n]} {median(rs, 1):.2f}" for n, rs in theirs.items()), flush=True)  # fmt: skip
    print(f"  CPU s, moviectl --version {median(floor, 1):.2f}, psql {median(psql, 1):.3f}")
    print("  in process, ms: " + ", ".join(f"{n} {t * 1000:.0f}" for n, t in inside.items()))


def psql_of_total_sizes() -> str:
    """moviectl's own `total-sizes` query with its parameter filled in, for psql."""
    from moviectl.core.inspect.sizes import TOTAL_SIZES

    return TOTAL_SIZES.replace("%(limit)s", "10000").replace("%%", "%")
