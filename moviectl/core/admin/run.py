"""Start, find and stop the one pgAdmin of a project (``MOVIE_DATA_DIR/pgadmin``).

The pid record ``pgadmin.json`` (0600) holds the pid, its start time (a pid the kernel gave
to another process does not match), the port and the access key. It is written as soon as
pgAdmin is spawned, so a moviectl killed while waiting leaves a record the next run finds.
A record whose process is gone (kill -9, a reboot) is stale: replaced. One ``db admin`` at a
time (flock on ``.lock``); a second one while pgAdmin runs reports that one.

pgAdmin runs in desktop mode (no login) on 127.0.0.1 and a free port; the access key (its
``PGADMIN_INT_KEY``, in the child's environment, never argv) is in the printed URL, so
another local user who finds the port gets 401. The child's environment has no ``MOVIE_*``
or ``PG*`` variable: the password reaches pgAdmin only through the pgpass file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from moviectl.core.admin.files import (
    AdminFiles,
    admin_files,
    config_text,
    digest,
    pgpass_text,
    server_name,
    servers_json,
    write_private,
)
from moviectl.core.admin.venv import PgAdminInstall, Progress, ensure_pgadmin
from moviectl.infra.engine import connect
from moviectl.infra.errors import LockBusy, ServerError
from moviectl.infra.ports import free_port
from moviectl.infra.processes import env_without_secrets
from moviectl.infra.settings import Settings
from moviectl.infra.waiting import poll_until

HOST = "127.0.0.1"
STOP_GRACE = 10.0  # seconds pgAdmin gets to exit on SIGTERM before SIGKILL
SETUP_TIMEOUT = 300.0  # pgAdmin's setup.py (create its SQLite, load servers.json)


@dataclass
class AdminResult:
    """What `db admin` did: ``state`` is started | running | stopped | not running."""

    state: str
    url: str | None = None
    pid: int | None = None
    port: int | None = None
    server: str | None = None  # the name of the app's server in pgAdmin's tree
    database: str | None = None
    source: str = "pypi"  # pgAdmin from its own virtual environment (pgadmin4 on PyPI)
    version: str | None = None
    directory: str | None = None
    log: str | None = None
    replaced_stale: bool = False  # a record of a pgAdmin that was gone was replaced
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)


def _read_state(files: AdminFiles) -> dict[str, Any] | None:
    try:
        data = json.loads(files.state.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _ours(state: dict[str, Any]) -> bool:
    """Does the recorded process still run, and is it the one we started?"""
    import psutil

    try:
        proc = psutil.Process(state["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return bool(abs(proc.create_time() - float(state.get("created", 0))) < 1.0)
    except (psutil.Error, TypeError, ValueError):
        return False


def _ping(port: int, key: str) -> bool:
    """Does pgAdmin answer, with our key (so it is ours, not another program on the port)?"""
    url = f"http://{HOST}:{port}/misc/ping?key={key}"
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy
        with opener.open(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def _one_at_a_time(files: AdminFiles, timeout: float) -> Iterator[None]:
    with os.fdopen(os.open(files.lock, os.O_WRONLY | os.O_CREAT, 0o600), "w") as fh:

        def take() -> bool:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not poll_until(take, timeout, 0.2):
            raise LockBusy(
                f"another `moviectl db admin` is busy with {files.root}",
                hint="wait for it to finish, then run the command again",
            )
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _result(record: dict[str, Any], files: AdminFiles, **kw: Any) -> AdminResult:
    return AdminResult(
        url=record["url"],
        pid=record["pid"],
        port=record["port"],
        server=record.get("server"),
        database=record.get("database"),
        version=record.get("version"),
        directory=str(files.root),
        log=str(files.log),
        **kw,
    )


def start(
    settings: Settings, timeout: float = 120.0, progress: Progress | None = None
) -> AdminResult:
    """pgAdmin with the app's server registered, started unless it already runs; its URL."""
    began = time.monotonic()
    target = settings.session_target()  # pgAdmin holds sessions: the server itself
    with connect(target, connect_timeout=settings.connect_timeout):
        pass  # the login works (exit 3/4 now, not a red cross in pgAdmin's tree later)
    files = admin_files(settings)
    with _one_at_a_time(files, timeout):
        old = _read_state(files)
        stale = False
        if old is not None:
            if _ours(old):
                port, key = old["port"], old["key"]
                if poll_until(lambda: _ping(port, key), timeout, 0.5):
                    return _result(old, files, state="running")
                _terminate(old)  # ours, but it does not answer: start a new one
            stale = True
            files.state.unlink(missing_ok=True)
        install = ensure_pgadmin(progress)
        new = _spawn(settings, files, install, timeout, progress)
        return _result(
            new,
            files,
            state="started",
            replaced_stale=stale,
            seconds=round(time.monotonic() - began, 1),
        )


def _child_env(files: AdminFiles, key: str | None = None) -> dict[str, str]:
    """The operator's environment without moviectl's settings or libpq's variables (the
    password must not reach pgAdmin's environment), plus pgAdmin's own."""
    env = env_without_secrets("VIRTUAL_ENV")
    env.update(CONFIG_DISTRO_FILE_PATH=str(files.config), PGADMIN_SERVER_MODE="OFF")
    if key is not None:
        env["PGADMIN_INT_KEY"] = key
    return env


def _setup(install: PgAdminInstall, files: AdminFiles, *args: str) -> str:
    """Run pgAdmin's ``setup.py`` (its documented command line); its output."""
    r = subprocess.run(
        [str(install.python), str(install.setup), *args],
        capture_output=True,
        text=True,
        env=_child_env(files),
        cwd=files.root,
        timeout=SETUP_TIMEOUT,
    )
    if r.returncode != 0:
        last = (r.stderr.strip() or r.stdout.strip() or "no output").splitlines()[-1]
        raise ServerError(f"pgAdmin's setup.py {args[0]} failed: {last}", hint=f"see {files.log}")
    return r.stdout


def _register(
    settings: Settings,
    files: AdminFiles,
    install: PgAdminInstall,
    port: int,
    progress: Progress | None,
) -> str:
    """Write the configuration, pgpass and servers.json; load the servers when they changed."""
    target = settings.session_target()
    write_private(files.config, config_text(files, port))
    write_private(files.pgpass, pgpass_text(target))
    servers = servers_json(target, files.pgpass, settings.connect_timeout)
    write_private(files.servers, servers)
    files.data.mkdir(mode=0o700, exist_ok=True)
    if not files.sqlite.exists():
        if progress:
            progress("pgAdmin: creating its configuration database")
        _setup(install, files, "setup-db")
    loaded = files.root / ".servers-loaded"
    wanted = digest(servers, str(files.sqlite.stat().st_ino))
    if not loaded.exists() or loaded.read_text() != wanted:
        if progress:
            progress(f"pgAdmin: registering {server_name(target)}")
        out = _setup(install, files, "load-servers", str(files.servers), "--replace")
        if not re.search(r"and 1 Server\(s\)", out):
            line = out.strip().splitlines()[-1] if out.strip() else "no output"
            raise ServerError(f"pgAdmin did not register the server: {line}")
        write_private(loaded, wanted)
    return server_name(target)


def _spawn(
    settings: Settings,
    files: AdminFiles,
    install: PgAdminInstall,
    timeout: float,
    progress: Progress | None,
) -> dict[str, Any]:
    """Start pgAdmin detached (its own session: it outlives this command and its Ctrl-C),
    record it, and wait until it answers; on timeout or an early exit, stop it and say so."""
    import psutil

    port = free_port(HOST)
    server = _register(settings, files, install, port, progress)
    key = secrets.token_urlsafe(24)
    if progress:
        progress(f"pgAdmin: starting on {HOST}:{port}")
    with os.fdopen(
        os.open(files.output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab"
    ) as out:
        proc = subprocess.Popen(
            [str(install.python), str(install.entry)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_child_env(files, key),
            cwd=files.root,
            start_new_session=True,
        )
    state: dict[str, Any] = {
        "pid": proc.pid,
        "created": psutil.Process(proc.pid).create_time(),
        "port": port,
        "key": key,
        "url": f"http://{HOST}:{port}/?key={key}",
        "server": server,
        "database": settings.session_target().database,
        "version": install.version,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_private(files.state, json.dumps(state, indent=2) + "\n")
    ready = poll_until(
        lambda: proc.poll() is not None or _ping(port, key),
        timeout,
        0.5,
        backoff=1.2,
        max_interval=2.0,
    )
    if ready and proc.poll() is None:
        return state
    code = proc.poll()
    _terminate(state)
    files.state.unlink(missing_ok=True)
    why = f"exited with code {code}" if code is not None else f"did not answer within {timeout:g} s"
    raise ServerError(
        f"pgAdmin on {HOST}:{port} {why}",
        hint=f"see {files.output} and {files.log}; a longer --timeout helps a slow machine",
    )


def _terminate(state: dict[str, Any]) -> None:
    """SIGTERM to pgAdmin's process group, SIGKILL after STOP_GRACE; reaped when ours."""
    import psutil

    pid = state["pid"]
    try:
        proc = psutil.Process(pid)
        group = os.getpgid(pid)
    except (psutil.Error, OSError):
        return
    with contextlib.suppress(OSError):
        os.killpg(group, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except psutil.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(psutil.Error):
            proc.wait(STOP_GRACE)
    except psutil.Error:
        pass


def stop(settings: Settings, timeout: float = 120.0) -> AdminResult:
    """Stop the project's pgAdmin (idempotent) and remove the pgpass file."""
    files = admin_files(settings, create=False)
    if not files.root.is_dir():
        return AdminResult(state="not running", directory=str(files.root))
    with _one_at_a_time(files, timeout):
        state = _read_state(files)
        files.pgpass.unlink(missing_ok=True)  # the password rests nowhere while stopped
        if state is None:
            return AdminResult(state="not running", directory=str(files.root))
        running = _ours(state)
        if running:
            _terminate(state)
        files.state.unlink(missing_ok=True)
        return AdminResult(
            state="stopped" if running else "not running",
            pid=state["pid"],
            port=state.get("port"),
            directory=str(files.root),
            replaced_stale=not running,
        )
