"""PostgreSQL's programs as the upgrade runs them: ``pg_upgrade`` as the cluster's owner,
``vacuumdb`` for statistics, ``pg_dumpall | psql`` for ``--method dump``. Each dies with
moviectl (a kill -9 of moviectl kills it); the password travels in the environment only."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.servers.cluster import SYSTEM_USER
from moviectl.core.upgrade.model import Progress
from moviectl.infra.errors import CheckFailed
from moviectl.infra.pgtools import first_error, kill_group, popen_child
from moviectl.infra.ports import free_port

if TYPE_CHECKING:
    from moviectl.core.servers.cluster import EmbeddedServer

FLAGS = {"link": "--link", "clone": "--clone", "copy": "--copy", "swap": "--swap"}


def _as_owner(kwargs: dict[str, Any], workdir: Path) -> None:
    """As root, run as the cluster's system user (pg_upgrade refuses root), from a
    directory that user may write (pg_upgrade's cwd)."""
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
        os.chown(workdir, entry.pw_uid, entry.pw_gid)


def _env(password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", PGPASSWORD=password)
    return env


def pg_upgrade(
    old: EmbeddedServer,
    new: EmbeddedServer,
    method: str,
    *,
    check: bool,
    progress: Progress,
) -> list[str]:
    """Run ``pg_upgrade`` (``check``: only its ``--check``); its output lines. Raises
    ``CheckFailed`` with pg_upgrade's own reason when it fails."""
    workdir = new.data_dir
    # a short socket directory: a Unix socket's path has ~100 bytes
    sockdir = Path(tempfile.mkdtemp(prefix="mvu-", dir="/tmp"))
    kwargs: dict[str, Any] = {"cwd": str(workdir)}
    _as_owner(kwargs, workdir)
    _as_owner({}, sockdir)
    pairs = {
        "--old-bindir": old.bin_dir,
        "--new-bindir": new.bin_dir,
        "--old-datadir": old.pgdata,
        "--new-datadir": new.pgdata,
        "--username": old.superuser,
        "--old-port": free_port(),
        "--new-port": free_port(),
        "--socketdir": sockdir,
        "--jobs": 2,
    }
    argv = [str(new.bin_dir / "pg_upgrade"), *(f"{k}={v}" for k, v in pairs.items())]
    argv.append(FLAGS[method])
    if check:
        argv.append("--check")
    lines: list[str] = []
    proc = popen_child(
        argv,
        own_group=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(old.password),
        **kwargs,
    )
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line.strip():
                lines.append(line)
                progress(f"pg_upgrade: {line.strip()}")
        proc.wait()
    except BaseException:
        kill_group(proc)
        proc.wait()
        raise
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    if proc.returncode != 0:
        raise CheckFailed(
            f"pg_upgrade{' --check' if check else ''} failed: {_reason(lines, new.pgdata)}",
            hint="nothing changed in the old cluster; fix what pg_upgrade names, then again",
            output=lines[-15:],
        )
    return lines


_CONSULT = re.compile(r'Consult the last few lines of "([^"]+)"(?: or "([^"]+)")?')


def _reason(lines: list[str], new_pgdata: Path) -> str:
    """pg_upgrade's own complaint: a failed check's line and the explanation after it;
    the error in the log a failed step names (pg_restore's, e.g. a full disk: pg_upgrade
    itself says only "Consult the last few lines of ..."); else the line before its
    "Failure, exiting" (e.g. "could not clone file ...")."""
    logged = _logged_error(lines, new_pgdata)
    if logged:
        return logged
    for i, line in enumerate(lines):
        if re.search(r"\bfatal\b", line, re.IGNORECASE):
            tail = [ln.strip() for ln in lines[i + 1 : i + 4] if ln.strip()]
            return " ".join([line.strip(), *tail])[:500]
    for i, line in enumerate(lines):
        if line.strip().startswith("Failure, exiting") and i > 0:
            return lines[i - 1].strip()[:500]
    return lines[-1].strip() if lines else "no output"


def _logged_error(lines: list[str], new_pgdata: Path) -> str | None:
    """The first error line in the tails of the logs pg_upgrade names on a failed step
    (read now: they lie in the new cluster, which the way back removes). Only a regular
    file under the new cluster is read: its output also carries database names, which
    must not make moviectl read another file (or block on a FIFO) into an error message.
    Where the new server died under pg_restore (a PANIC on a full disk), its own log
    beside says why."""
    within = new_pgdata.resolve()
    for line in lines:
        for match in _CONSULT.finditer(line):
            for name in filter(None, match.groups()):
                path = (new_pgdata.parent / name).resolve()  # relative: from pg_upgrade's cwd
                found = _errors_in(path, within, r"\b(?:error|fatal|panic):")
                if not found:
                    continue
                if _LOST.search(found[0]):
                    died = _errors_in(path.parent / _SERVER_LOG, within, r"\b(?:panic|fatal):")
                    died.sort(key=lambda ln: not re.search(r"\bpanic:", ln, re.I))  # PANIC first
                    if died:
                        return f"{found[0]} (the new server: {died[0]})"[:500]
                return found[0][:500]
    return None


_LOST = re.compile(r"server closed the connection|terminating connection", re.I)
_SERVER_LOG = "pg_upgrade_server.log"  # pg_upgrade's name for the servers' log


def _errors_in(path: Path, within: Path, pattern: str) -> list[str]:
    """Lines matching ``pattern`` in the tail of ``path``, a regular file under ``within``
    (whitespace folded); none for anything else."""
    path = path.resolve()
    if not path.is_relative_to(within) or not path.is_file():
        return []
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            tail = f.read(16384).decode(errors="replace").splitlines()[-60:]
    except OSError:
        return []
    return [" ".join(ln.split()) for ln in tail if re.search(pattern, ln, re.I)]


@contextmanager
def analyzing(new: EmbeddedServer, new_major: int) -> Iterator[list[str]]:
    """Statistics the new major did not carry over, made while the block runs (the
    verification's reads overlap it; the server has the second core): 18+ keeps the
    planner's, so only what the old cluster never had is made, in one pass (stages would
    ANALYZE those tables three times for the same final statistics, and the command waits
    for the last); older ones carry none (ANALYZE in stages, the cheap ones first, usable
    early). The list gets the command's line once it has finished."""
    args = ["--all", "--analyze-in-stages"]
    if new_major >= 18:
        args = ["--all", "--analyze-only", "--missing-stats-only"]
    conn = ["-h", new.host, "-p", str(new.port), "-U", new.superuser]
    proc = popen_child(
        [str(new.bin_dir / "vacuumdb"), *conn, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(new.password),
    )
    done: list[str] = []
    try:
        yield done
        _, err = proc.communicate(timeout=3600)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise CheckFailed(f"vacuumdb failed: {first_error(err)}")
    done.append(" ".join(["vacuumdb", *args]))


def dump_restore(old: EmbeddedServer, new: EmbeddedServer, progress: Progress) -> None:
    """``pg_dumpall`` of the old server into the new one (both running), by the new
    major's tools; the role both clusters were made with already exists (that error only)."""
    conn = ["-h", old.host, "-U", old.superuser]
    progress(f"pg_dumpall from port {old.port} into port {new.port}")
    dump = popen_child(
        [str(new.bin_dir / "pg_dumpall"), *conn, "-p", str(old.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(old.password),
    )
    restore = popen_child(
        [str(new.bin_dir / "psql"), "-X", "-q", *conn, "-p", str(new.port), "-d", "postgres"],
        stdin=dump.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(new.password),
    )
    assert dump.stdout is not None
    dump.stdout.close()
    _, rerr = restore.communicate()
    _, derr = dump.communicate()
    errors = [
        ln
        for ln in rerr.decode(errors="replace").splitlines()
        if "ERROR" in ln and not re.search(r'role "[^"]+" already exists', ln)
    ]
    if dump.returncode != 0 or restore.returncode != 0 or errors:
        why = first_error(derr.decode(errors="replace")) if dump.returncode else None
        raise CheckFailed(
            f"dump and restore failed: {why or (errors[0] if errors else 'psql failed')}",
            hint="nothing changed in the old cluster",
        )
