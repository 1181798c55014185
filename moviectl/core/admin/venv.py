"""pgAdmin's own virtual environment, made on first use with a pinned ``pgadmin4``.

Why not an extra (``moviectl[admin]``): every ``pgadmin4`` release pins its dependencies to
exact versions, among them Typer to an older minor (9.18: ``typer==0.27.*``; moviectl needs
``>=0.28``), psycopg and psutil: no environment satisfies both (README, "pgAdmin"). So it
gets one of its own, under the user's cache directory, shared by every project.

A half-made environment (killed, disk full, network gone) has no ``complete`` marker and is
removed and made again; two moviectl processes making it at once take turns (flock).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moviectl.infra.errors import ToolMissing
from moviectl.infra.processes import env_without_secrets

PGADMIN4_VERSION = "9.18"
INSTALL_TIMEOUT = 1800.0  # seconds: a 126 MB wheel and ~90 dependencies on a slow link

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PgAdminInstall:
    """An installed pgAdmin: its Python and the directory of ``pgAdmin4.py``/``setup.py``."""

    root: Path
    python: Path
    package: Path
    version: str

    @property
    def entry(self) -> Path:
        return self.package / "pgAdmin4.py"

    @property
    def setup(self) -> Path:
        return self.package / "setup.py"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "moviectl"


def venv_dir() -> Path:
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    return cache_root() / f"pgadmin4-{PGADMIN4_VERSION}-{py}"


def _marker(root: Path) -> Path:
    return root / "moviectl-complete"


def _installed(root: Path) -> PgAdminInstall | None:
    marker = _marker(root)
    if not marker.is_file():
        return None
    package = Path(marker.read_text().strip())
    python = root / "bin" / "python"
    if not (package / "pgAdmin4.py").is_file() or not python.exists():
        return None
    return PgAdminInstall(root, python, package, PGADMIN4_VERSION)


def ensure_pgadmin(progress: Progress | None = None) -> PgAdminInstall:
    """The pinned pgAdmin, installed first when it is not (``progress``: installer lines)."""
    root = venv_dir()
    found = _installed(root)
    if found is not None:
        return found
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another moviectl may be installing it right now
        found = _installed(root)
        if found is not None:
            return found
        if root.exists():
            shutil.rmtree(root)  # a half-made one (no marker): start again
        say = progress or (lambda _line: None)
        say(f"installing pgAdmin {PGADMIN4_VERSION} into {root} (once; ~500 MB)")
        started = time.monotonic()
        _install(root, say)
        package = _package_dir(root)
        _marker(root).write_text(f"{package}\n")
        say(f"pgAdmin {PGADMIN4_VERSION} installed in {time.monotonic() - started:.0f} s")
    found = _installed(root)
    assert found is not None
    return found


def _install(root: Path, say: Progress) -> None:
    """uv when it is on PATH (seconds), else the standard library's venv and pip."""
    spec = f"pgadmin4=={PGADMIN4_VERSION}"
    uv = shutil.which("uv")
    python = root / "bin" / "python"
    if uv:
        steps = [
            [uv, "venv", "--quiet", "--python", sys.executable, str(root)],
            [uv, "pip", "install", "--python", str(python), spec],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(root)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", spec],
        ]
    deadline = time.monotonic() + INSTALL_TIMEOUT
    for argv in steps:
        _run(argv, say, deadline)


def _run(argv: list[str], say: Progress, deadline: float) -> None:
    # the installer runs code from the index (build backends): no password reaches it
    env = env_without_secrets("VIRTUAL_ENV")
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    # a silent, stalled installer never reaches the per-line check below: killed on time
    timer = threading.Timer(max(1.0, deadline - time.monotonic()), proc.kill)
    timer.daemon = True
    timer.start()
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if line:
                last = line
                say(line)
            if time.monotonic() > deadline:
                proc.kill()
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        code = None
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if code != 0:
        what = "timed out" if code is None or time.monotonic() > deadline else f"failed: {last}"
        raise ToolMissing(
            f"installing pgAdmin {PGADMIN4_VERSION} {what}",
            hint="it needs the Python package index (pip/uv); run again to retry",
        )


def _package_dir(root: Path) -> Path:
    """Where the wheel put pgAdmin's application (``…/site-packages/pgadmin4``)."""
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return Path(purelib) / "pgadmin4"
