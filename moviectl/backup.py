"""Backups you can trust: pg_dump to a temp name, read back, checksummed, then renamed.

Beside each backup a manifest (``<file>.manifest.json``) records its sha256, size,
versions, database, Alembic revision, row counts per table and timings. ``verify``
restores it into a throwaway database and compares (the restore drill).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moviectl.engine import connect
from moviectl.errors import CheckFailed, InputFileError, MoviectlError, ToolMissing
from moviectl.pgtools import find_tool
from moviectl.settings import DbTarget, Settings

FORMATS = {"custom": ("c", ".dump"), "directory": ("d", ".dir"), "plain": ("p", ".sql")}
Progress = Callable[[int], None]  # bytes written so far


@dataclass
class Manifest:
    file: str
    format: str
    sha256: str
    size_bytes: int
    database: str
    server_version: str
    server_major: int
    pg_dump_version: str
    alembic_revision: str | None
    row_counts: dict[str, int]
    started_at: str
    finished_at: str
    seconds: float
    verified_at: str | None = None
    verify_result: str | None = None


@dataclass
class BackupResult:
    path: str
    manifest_path: str
    manifest: Manifest
    via: str  # host pg_dump path, or "docker exec <container>"


@dataclass
class BackupEntry:
    path: str
    created: str | None
    size_bytes: int | None
    revision: str | None
    verified_at: str | None
    manifest: bool


@dataclass
class VerifyResult:
    path: str
    checksum_ok: bool
    restored_into: str | None
    revision_ok: bool
    counts_ok: bool
    differences: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.checksum_ok and self.revision_ok and self.counts_ok

    __json_extra__ = ("ok",)


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _facts(c: Any) -> tuple[str, int, str | None, dict[str, int]]:
    """(server version, major, alembic revision, exact row count per table) on connection c."""
    from psycopg import sql

    version = str(c.execute("SHOW server_version").fetchone()[0])
    num = int(c.execute("SHOW server_version_num").fetchone()[0])
    tables = [r[0] for r in c.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )]  # fmt: skip
    counts = {
        t: int(c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t)))
               .fetchone()[0])
        for t in tables
    }  # fmt: skip
    rev = None
    if "alembic_version" in counts:
        row = c.execute("SELECT version_num FROM alembic_version").fetchone()
        rev = row[0] if row else None
    return version, num // 10000, rev, counts


def snapshot(settings: Settings, target: DbTarget) -> tuple[str, int, str | None, dict[str, int]]:
    with connect(target, connect_timeout=settings.connect_timeout) as c:
        return _facts(c)


def _out_dir(settings: Settings, output: Path | None) -> Path:
    d = Path(output) if output is not None else Path(settings.backup_dir)
    if output is None:
        d.mkdir(parents=True, exist_ok=True)
    if not d.is_dir():
        raise InputFileError(f"output directory {d} does not exist", hint="create it first")
    if not os.access(d, os.W_OK | os.X_OK):
        raise InputFileError(
            f"output directory {d} is not writable", hint="choose another --output"
        )
    return d


def _watch(path: Path, progress: Progress | None, stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(0.2):
            if progress:
                progress(_size(path))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class _Dump:
    """A running pg_dump, its stderr kept in a temp file, its output size watched."""

    def __init__(self, argv: list[str], env: dict[str, str], tmp: Path,
                 progress: Progress | None) -> None:  # fmt: skip
        import tempfile

        self.err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait)
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=self.err)
        self.stop = threading.Event()
        self.watcher = _watch(tmp, progress, self.stop)

    def wait(self) -> tuple[int, str]:
        try:
            code = self.proc.wait()
        finally:
            self.stop.set()
            self.watcher.join()
        self.err.seek(0)
        text = self.err.read().decode(errors="replace")
        self.err.close()
        return code, text

    def kill(self) -> None:
        self.proc.kill()
        self.wait()


def _child_env(target: DbTarget) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(target.child_env())
    return env


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _dump_error(stderr: str, code: int, target: DbTarget) -> MoviectlError:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else f"pg_dump exited with {code}"
    if "No space left on device" in stderr:
        return MoviectlError(
            f"disk full while writing the backup: {last}",
            hint="free space or choose another --output; no partial file was kept",
        )
    if code < 0:
        return MoviectlError(f"pg_dump was killed (signal {-code}); no partial file was kept")
    from moviectl.engine import translate_error

    err = translate_error(RuntimeError(last), target)
    err.message = f"pg_dump failed: {err.message}"
    return err


def backup(
    settings: Settings,
    *,
    output: Path | None = None,
    fmt: str = "custom",
    jobs: int | None = None,
    compress: str | None = None,
    database: str | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    if fmt not in FORMATS:
        raise InputFileError(f"unknown format {fmt!r}", hint="custom, directory or plain")
    target = settings.target(database)
    out = _out_dir(settings, output)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    letter, suffix = FORMATS[fmt]
    name = f"{target.database}-{started:%Y%m%dT%H%M%SZ}{suffix}"
    final, tmp = out / name, out / f".{name}.partial"
    with connect(target, connect_timeout=settings.connect_timeout, autocommit=False) as snap:
        # pg_dump and the manifest's row counts read one exported snapshot, concurrently
        from psycopg import IsolationLevel

        snap.isolation_level = IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        major = int(snap.execute("SHOW server_version_num").fetchone()[0]) // 10000  # type: ignore[index]
        snap_id = str(snap.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        try:
            tool = find_tool("pg_dump", settings, major)
        except ToolMissing:
            tool = None
        if tool is None:
            from moviectl.backup_docker import dump_in_container

            version, major, rev, counts = _facts(snap)
            via, dump_version = dump_in_container(settings, target, tmp, fmt, progress, snap_id)
        else:
            argv = [tool.path, f"-F{letter}", "-f", str(tmp), "--no-password",
                    f"--snapshot={snap_id}"]  # fmt: skip
            if jobs and fmt == "directory":
                argv += ["-j", str(jobs)]
            if compress:
                argv += ["-Z", compress]
            dump = _Dump(argv, _child_env(target), tmp, progress)
            try:
                version, major, rev, counts = _facts(snap)
            except BaseException:
                dump.kill()
                _remove(tmp)
                raise
            code, stderr = dump.wait()
            if code != 0:
                _remove(tmp)
                raise _dump_error(stderr, code, target)
            via, dump_version = tool.path, tool.version
        snap.rollback()
    try:
        _read_back(settings, tmp, fmt)
        digest = sha256_of(tmp)
        finished = datetime.now(UTC)
        man = Manifest(
            file=name, format=fmt, sha256=digest, size_bytes=_size(tmp), database=target.database,
            server_version=version, server_major=major, pg_dump_version=dump_version,
            alembic_revision=rev, row_counts=counts, started_at=started.isoformat(),
            finished_at=finished.isoformat(), seconds=round(time.monotonic() - t0, 3),
        )  # fmt: skip
        mpath = manifest_path(final)
        _write_json(mpath, asdict(man))
        os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise
    return BackupResult(str(final), str(mpath), man, via)


def _read_back(settings: Settings, path: Path, fmt: str) -> None:
    """``pg_restore --list`` must read the archive (plain: the dump's closing line)."""
    if fmt == "plain":
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            if b"PostgreSQL database dump complete" not in fh.read():
                raise CheckFailed(f"{path.name}: the SQL dump is incomplete")
        return
    tool = find_tool("pg_restore", settings)
    res = subprocess.run([tool.path, "--list", str(path)], capture_output=True, text=True)
    if res.returncode != 0:
        raise CheckFailed(f"pg_restore cannot read the backup {path.name}: "
                          f"{(res.stderr.strip().splitlines() or ['?'])[-1]}")  # fmt: skip


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def load_manifest(path: Path) -> Manifest:
    mpath = manifest_path(path)
    if not path.exists():
        raise InputFileError(f"backup not found: {path}", hint="`moviectl backup list` shows them")
    try:
        return Manifest(**json.loads(mpath.read_text()))
    except FileNotFoundError:
        raise InputFileError(f"no manifest beside {path} ({mpath.name})") from None
    except (ValueError, TypeError) as exc:
        raise InputFileError(f"the manifest {mpath} is unreadable: {exc}") from None


def check_checksum(path: Path, man: Manifest) -> None:
    actual = sha256_of(path)
    if actual != man.sha256:
        raise CheckFailed(
            f"checksum mismatch for {path.name}: the file is corrupted or truncated "
            f"(sha256 {actual[:12]}…, manifest says {man.sha256[:12]}…)",
            hint="do not restore it; use another backup (`moviectl backup list`)",
        )


def list_backups(settings: Settings, directory: Path | None = None) -> list[BackupEntry]:
    d = Path(directory or settings.backup_dir)
    if not d.is_dir():
        return []
    entries = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or p.name.endswith(".manifest.json"):
            continue
        if not p.name.endswith(tuple(s for _, s in FORMATS.values())):
            continue
        try:
            m = load_manifest(p)
            entries.append(BackupEntry(str(p), m.finished_at, m.size_bytes, m.alembic_revision,
                                       m.verified_at, True))  # fmt: skip
        except InputFileError:
            entries.append(BackupEntry(str(p), None, _size(p), None, None, False))
    entries.sort(key=lambda e: e.created or "")
    return entries


def prune(settings: Settings, keep: int, directory: Path | None = None) -> list[str]:
    """Delete the oldest backups beyond ``keep``; never the newest verified one."""
    entries = [e for e in list_backups(settings, directory) if e.manifest]
    newest_verified = next((e.path for e in reversed(entries) if e.verified_at), None)
    doomed = [e for e in entries[: max(0, len(entries) - keep)] if e.path != newest_verified]
    for e in doomed:
        _remove(Path(e.path))
        manifest_path(Path(e.path)).unlink(missing_ok=True)
    return [e.path for e in doomed]
