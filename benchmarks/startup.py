"""Start-up figures: `health --live`, `health`, `--help`, `migrate status`, against their peers."""

from __future__ import annotations

import statistics
import sys
import time

from benchmarks.common import (
    ALEMBIC,
    MOVIECTL,
    PG,
    ROOT,
    STACK_FLOOR,
    Cmd,
    alternate,
    bytecode,
    load1,
    row,
    with_env,
)
from moviectl.infra.settings import load_settings


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


def bench_status(env: dict[str, str], url: str, rounds: int) -> None:
    """`moviectl migrate status` (the row read with psycopg, the scripts with ast) against
    `alembic current` on the same database; `moviectl --version` is the CLI's own floor."""
    since = load1()
    cmds: dict[str, Cmd] = {
        "status": ([MOVIECTL, "migrate", "status"], {}),
        "alembic": ([ALEMBIC, "-c", str(ROOT / "alembic.ini"), "current"], {}),
        "version": ([MOVIECTL, "--version"], {}),
        "stack": (STACK_FLOOR, {}),
    }
    with bytecode({**env, "MOVIE_DATABASE_URL": url}, cmds) as (warm, cold):
        m, cpu = _wall_and_cpu(with_env(cmds, warm), rounds)
        c = alternate(with_env(cmds, cold), max(3, rounds // 2))
    row("migrate status, whole process (median)", m["status"], 0.3, "s", "<= 0.3 s",
        m["status"] <= 0.3, since)  # fmt: skip
    row("migrate status vs alembic current", m["status"], m["alembic"], "s", "<= 0.25x",
        m["status"] <= 0.25 * m["alembic"], since)  # fmt: skip
    row("  moviectl --version (the CLI's floor) vs status", m["version"], m["status"], "s",
        "info", True, since)  # fmt: skip
    row("  import typer, rich.console, psycopg (the stack's floor) vs status", m["stack"],
        m["status"], "s", "info", True, since)  # fmt: skip
    row("  no bytecode cache: status vs alembic current", c["status"], c["alembic"], "s", "info",
        True, since)  # fmt: skip
    row("  CPU seconds (user + sys): status vs alembic current", cpu["status"], cpu["alembic"],
        "s", "info: less load-sensitive", True, since)  # fmt: skip
    print(f"  CPU s, warm: status {cpu['status']:.3f}, alembic current {cpu['alembic']:.3f}, "
          f"--version {cpu['version']:.3f}", flush=True)  # fmt: skip


def _wall_and_cpu(cmds: dict[str, Cmd], n: int) -> tuple[dict[str, float], dict[str, float]]:
    """``alternate``'s medians of wall seconds, and of each process's CPU seconds beside
    them (user + sys, which a busy shared machine distorts less than wall time)."""
    from benchmarks.inspecting import timed

    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cmds}
    for _ in range(n):
        for name, (argv, cmd_env) in cmds.items():
            runs[name].append(timed(argv, cmd_env))
    wall = {name: statistics.median(r[0] for r in rs) for name, rs in runs.items()}
    return wall, {name: statistics.median(r[1] for r in rs) for name, rs in runs.items()}
