"""`moviectl backup`: pg_dump to a temp name, read back, checksummed, then renamed.

pg_dump and the manifest's row counts read one exported snapshot. When no host
pg_dump fits the server, the dump runs inside the db container (``container_dump.py``).
The checksum is computed while ``pg_restore --list`` (the pg_restore beside that pg_dump)
reads the archive back (``readback.py``): a custom-format archive cannot be hashed as
pg_dump writes it, because pg_dump seeks back to its start to fill in the data offsets
when it is done.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.backups import compression
from moviectl.core.backups.compression import Compression
from moviectl.core.backups.dump_process import DumpProcess, dump_error, lock_wait_failed
from moviectl.core.backups.fileio import (
    Progress,
    fsync_dir,
    fsync_path,
    make_private_dir,
    remove_path,
    size_of,
    write_json_atomic,
)
from moviectl.core.backups.leftovers import clean_databases, clean_partials, partial_name
from moviectl.core.backups.manifest import FORMATS, Manifest, manifest_path
from moviectl.core.backups.readback import read_back_and_hash, readability
from moviectl.core.backups.signing import sign, signing_key
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.engine import connect, require_session
from moviectl.infra.errors import (
    InputFileError,
    LockBusy,
    MoviectlError,
    ToolMissing,
)
from moviectl.infra.held_signals import held
from moviectl.infra.pgerrors import is_lock_timeout
from moviectl.infra.pgtools import child_env, compressions, find_tool, kill_group
from moviectl.infra.server_facts import DatabaseFacts, database_facts, server_major
from moviectl.infra.watchdog import StallWatch

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


@dataclass
class BackupResult:
    path: str
    manifest_path: str
    manifest: Manifest
    via: str  # host pg_dump path, or "docker exec <container>"
    copies: list[str] = field(default_factory=list)  # the second repository's copy

    # size and time side by side, to choose a --compress by (the manifest has them too)
    __json_extra__ = ("compression", "size_bytes", "dump_seconds", "seconds")

    @property
    def compression(self) -> str | None:
        return self.manifest.compression

    @property
    def size_bytes(self) -> int:
        return self.manifest.size_bytes

    @property
    def dump_seconds(self) -> float | None:
        return self.manifest.dump_seconds

    @property
    def seconds(self) -> float:
        return self.manifest.seconds


@dataclass
class Dumped:
    """What ``_dump`` learnt: who dumped, with what, how long; the snapshot's facts."""

    via: str
    dump_version: str
    server_version: str
    server_major: int
    revision: str | None
    counts: dict[str, int]
    compression: Compression
    seconds: float  # pg_dump's own run, without the read-back and the checksum


def snapshot(settings: Settings, target: DbTarget) -> DatabaseFacts:
    with connect(target, connect_timeout=settings.connect_timeout) as c:
        return database_facts(c)


def claim_name(
    out: Path, database: str, started: datetime, suffix: str, *, directory: bool
) -> tuple[str, Path]:
    """A backup name nobody else has, and its temp path, created exclusively (0600/0700).

    Names are ``<database>-<UTC time>-<6 hex><suffix>``: two backups started in the same
    second (cron and an operator, a safety backup) never share a name or a temp file. The
    database name is reduced to a safe file name, so the file always lands inside ``out``.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database).lstrip(".") or "database"
    while True:
        name = f"{safe[:100]}-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}{suffix}"
        tmp = out / partial_name(name)
        if (out / name).exists():
            continue
        made = False
        try:
            with held():  # a signal waits until the file is made, and it is removed again
                if directory:
                    tmp.mkdir(mode=0o700)
                else:
                    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                made = True
        except FileExistsError:
            continue
        except BaseException:
            if made:
                remove_path(tmp)
            raise
        return name, tmp


def free_job_slots(conn: Any, database: str | None = None) -> int:
    """How many parallel pg_dump workers the server can take without starving others.

    pg_dump -j N opens N + 1 connections; a tenth of max_connections (at least 2) stays
    free for everyone else, so `--jobs 99999` never fills the server. A role's CONNECTION
    LIMIT, and ``database``'s, bind all but superusers: their free slots count too.
    """
    # a session: to a role neither superuser nor pg_read_all_stats, another role's shows
    # no backend_type; any of those with a database counts (autovacuum too: on the safe side);
    # PostgreSQL 16+'s reserved_connections are counted out for everyone, on the safe side too
    row = conn.execute(
        """WITH s AS (SELECT usesysid, datid FROM pg_stat_activity
                      WHERE backend_type = 'client backend'
                         OR backend_type IS NULL AND datid IS NOT NULL)
           SELECT current_setting('max_connections')::int
                  - current_setting('superuser_reserved_connections')::int
                  - coalesce(current_setting('reserved_connections', true), '0')::int,
                  (SELECT count(*) FROM s), r.rolsuper, r.rolconnlimit, d.datconnlimit,
                  (SELECT count(*) FROM s WHERE s.usesysid = r.oid),
                  (SELECT count(*) FROM s WHERE s.datid = d.oid)
           FROM pg_roles r LEFT JOIN pg_database d ON d.datname = %s
           WHERE r.rolname = session_user""",
        (database,),
    ).fetchone()
    usable, used = int(row[0]), int(row[1])
    free = usable - used - 1 - max(2, usable // 10)
    for limit, in_use in ((row[3], row[5]), (row[4], row[6])):
        if not row[2] and limit is not None and limit >= 0:  # -1: no limit
            free = min(free, int(limit) - int(in_use) - 1)
    return max(1, free)


def _out_dir(settings: Settings, output: Path | None) -> Path:
    d = _out_path(settings, output)
    if output is None:
        make_private_dir(d)
    if not d.is_dir():
        raise InputFileError(f"output directory {d} does not exist", hint="create it first")
    try:  # a file made and gone: os.access says yes to root anywhere, /proc included
        with tempfile.TemporaryFile(dir=d):
            pass
    except OSError as exc:
        raise InputFileError(
            f"output directory {d} is not writable ({exc.strerror})",
            hint="choose another --output",
        ) from None
    return d


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
    if compress is not None:  # a typo fails before anything connects or is written
        compression.choose(compress, fmt, "", "", frozenset(compression.METHODS))
    key = signing_key(settings)  # a bad key is refused before anything is written
    out = _out_dir(settings, output)
    settings = require_session(settings, "backup", database)  # pg_dump's snapshot: direct
    target = settings.target(database)
    clean_partials(out)  # what killed runs left here
    started = datetime.now(UTC)
    t0 = time.monotonic()
    letter, suffix = FORMATS[fmt]
    name, tmp = claim_name(out, target.database, started, suffix, directory=fmt == "directory")
    try:
        final = out / name
        d = _dump(settings, target, tmp, fmt, letter, jobs, compress, progress)
    except BaseException:
        remove_path(tmp)  # whatever stopped the dump, no temp file stays
        raise
    try:
        if tmp.is_dir():  # pg_dump -Fd writes its files with the umask's mode
            for f in tmp.rglob("*"):
                f.chmod(0o600 if f.is_file() else 0o700)
        digest = read_back_and_hash(settings, tmp, fmt, d.via)
        finished = datetime.now(UTC)
        man = Manifest(
            file=name,
            format=fmt,
            sha256=digest,
            size_bytes=size_of(tmp),
            database=target.database,
            server_version=d.server_version,
            server_major=d.server_major,
            pg_dump_version=d.dump_version,
            alembic_revision=d.revision,
            row_counts=d.counts,
            started_at=started.isoformat(),
            finished_at=finished.isoformat(),
            seconds=round(time.monotonic() - t0, 3),
            compression=d.compression.spec,
            dump_seconds=round(d.seconds, 3),
            **readability(fmt, d.dump_version, d.server_major),
        )
        mpath = manifest_path(final)
        fsync_path(tmp)  # the dump is on disk before its name says it is complete
        write_json_atomic(mpath, sign(key, asdict(man)))
        os.replace(tmp, final)
        fsync_dir(out)
    except BaseException:
        remove_path(tmp)
        raise
    return BackupResult(str(final), str(mpath), man, d.via)


def _out_path(settings: Settings, output: Path | None) -> Path:
    return Path(output) if output is not None else Path(settings.backup_dir)


def _dump(
    settings: Settings,
    target: DbTarget,
    tmp: Path,
    fmt: str,
    letter: str,
    jobs: int | None,
    compress: str | None,
    progress: Progress | None,
) -> Dumped:
    """Run pg_dump into ``tmp`` on an exported snapshot."""
    from moviectl.core.migrations.timeouts import to_ms

    lock_ms = to_ms(settings.stall_timeout)  # a lock held elsewhere: give up, never wait on
    with connect(target, connect_timeout=settings.connect_timeout) as snap:
        # pg_dump and the manifest's row counts read one exported snapshot, concurrently
        from psycopg import IsolationLevel

        snap.execute(f"SET lock_timeout = {lock_ms}")  # an int: the row counts, the cleanup
        snap.autocommit = False
        snap.isolation_level = IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        major = server_major(snap)
        snap_id = str(snap.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
        tls = target.wants_tls or bool(snap.pgconn.ssl_in_use)  # never a plain child
        try:
            tool = find_tool("pg_dump", settings, major, tls=tls, prefer_major=major)
            missing = None
        except ToolMissing as exc:
            tool, missing = None, exc
        host = tool  # restore and verify read the backup with this build's pg_restore
        if fmt != "directory" and in_container_first(settings, tool, major):
            tool = None  # the Docker backend's own pg_dump, the server's very version
        if tool is None:
            from moviectl.core.backups.container_dump import dump_in_container

            version, major, rev, counts = database_facts(snap)
            started = time.monotonic()
            try:
                readable = compressions(host) if host is not None else None
                via, dump_version, comp = dump_in_container(
                    settings, target, tmp, fmt, progress, snap_id, compress, readable
                )
            except ToolMissing:
                assert missing is not None
                raise missing from None  # what to install, TLS included
        else:
            comp = compression.choose(compress, fmt, tool.path, tool.version, compressions(tool))
            argv = [
                tool.path,
                f"-F{letter}",
                "-f",
                str(tmp),
                "--no-password",
                f"--snapshot={snap_id}",
                f"--lock-wait-timeout={lock_ms}",
                "-d",
                target.child_conninfo(require_tls=tls),
            ]
            if jobs and fmt == "directory":
                argv += ["-j", str(min(jobs, free_job_slots(snap, target.database)))]
            argv += compression.z_argv(comp, tool.version)
            started = time.monotonic()
            dump = DumpProcess(argv, child_env(target), tmp, progress)
            try:  # whatever stops this, pg_dump is dead before its file is removed
                watch = StallWatch.for_settings(settings, target, "the backup")
                # progress: the bytes pg_dump has written (a stat; no psutil while pg_dump
                # and the server share the cores); a pause with no answer is a stall
                watch.track(lambda: size_of(tmp))
                watch.on_stall(lambda: kill_group(dump.proc))
                watch.watch_connection(snap)
                with watch:
                    version, major, rev, counts = database_facts(snap)
                    code, stderr = dump.wait()
            except BaseException as exc:
                dump.kill()
                if isinstance(exc, Exception) and is_lock_timeout(exc):
                    raise lock_busy(snap, target, settings) from None
                raise
            if watch.stalled:
                raise watch.error()
            if code != 0:
                remove_path(tmp)
                if lock_wait_failed(stderr):
                    raise lock_busy(snap, target, settings)
                raise dump_error(stderr, code, target)
            via, dump_version = tool.path, tool.version
        seconds = time.monotonic() - started
        snap.rollback()
        snap.autocommit = True
        with contextlib.suppress(MoviectlError):  # one login: killed runs' databases too
            clean_databases(snap)
    return Dumped(via, dump_version, version, major, rev, counts, comp, seconds)


def lock_busy(snap: Any, target: DbTarget, settings: Settings) -> LockBusy:
    """The backup gave up on a table lock (pg_dump's, or the row counts'): who holds one.

    Only ACCESS EXCLUSIVE conflicts with the ACCESS SHARE locks a dump takes."""
    from moviectl.core.migrations.timeouts import stall_lock_busy

    with contextlib.suppress(Exception):
        snap.rollback()  # out of the failed snapshot transaction, to ask
    modes = ["AccessExclusiveLock"]
    return stall_lock_busy(
        snap, "backup", target, settings, modes, "no file was kept", "back up again"
    )


def in_container_first(settings: Settings, tool: Any, major: int) -> bool:
    """For the Docker backend, dump with the container's own pg_dump unless the host has
    one of the server's very major: a backup its own pg_restore reads."""
    if settings.db_backend != "docker" or (tool is not None and tool.major == major):
        return False
    from moviectl.core.servers.docker_engine import engine_answers

    return engine_answers()
