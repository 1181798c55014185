"""`moviectl backup --to s3://…`: pg_dump's output streamed into a repository.

No local copy: pg_dump writes to a pipe, each block is hashed (and, with age recipients,
encrypted) as it goes, and the repository's ``put`` uploads it as one multipart upload
that the server makes visible only when complete. The order makes a backup count only
when whole:

1. ``<name>.inprogress`` (pid, host): whose upload this is;
2. ``<name>``: the dump, under its final name only once complete;
3. ``<name>.manifest.json``: written last; listing, verify and restore need it;
4. the in-progress marker is removed.

A killed run leaves a marker and perhaps a data object without a manifest: not listed,
and removed by the next backup from this host once the owner is gone. A failed run
(pg_dump failed, the store stopped answering) removes what it wrote before it reports.
A custom-format dump written to a pipe has no data offsets: pg_restore reads it whole
(sequential restore), which is what a restore from a bucket does anyway.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from moviectl.core.backups import compression
from moviectl.core.backups.compression import Compression
from moviectl.core.backups.dump import BackupResult, lock_busy
from moviectl.core.backups.dump_process import dump_error, lock_wait_failed
from moviectl.core.backups.fileio import Progress
from moviectl.core.backups.leftovers import clean_databases, this_host
from moviectl.core.backups.manifest import FORMATS, Manifest
from moviectl.core.backups.objects import BLOCK, Repository
from moviectl.core.backups.readback import readability
from moviectl.core.backups.signing import sign, signing_key
from moviectl.core.backups.uploads import read_owner
from moviectl.infra.engine import open_session
from moviectl.infra.errors import InputFileError, MoviectlError, UsageError
from moviectl.infra.pgerrors import is_lock_timeout
from moviectl.infra.pgtools import (
    child_env,
    compressions,
    find_tool,
    kill_group,
    popen_child,
    prefetch_tools,
)
from moviectl.infra.processes import pid_alive
from moviectl.infra.server_facts import DatabaseFacts, database_facts, server_major
from moviectl.infra.watchdog import StallWatch

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.settings import Settings

INPROGRESS = ".inprogress"
MANIFEST = ".manifest.json"


def new_name(database: str, started: datetime, suffix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", database).lstrip(".") or "database"
    return f"{safe[:100]}-{started:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}{suffix}"


def clean_dead_uploads(repo: Repository) -> list[str]:
    """Remove what killed uploads from this host left (owner gone); the names removed.
    Their unfinished multipart uploads are aborted first, while the marker still proves
    the owner gone (``uploads.py``; skipped without rclone)."""
    dead = []
    for obj in repo.list():
        if not obj.name.endswith(INPROGRESS):
            continue
        name = obj.name[: -len(INPROGRESS)]
        owner = read_owner(repo, obj.name)
        if owner is None:
            continue  # unreadable: another tool's, or being written
        pid, host = owner
        if host != this_host() or pid_alive(pid):
            continue
        dead.append(name)
    if dead:
        from moviectl.core.backups.uploads import abort_dead

        abort_dead(repo, dead)
    for name in dead:
        if repo.stat(name + MANIFEST) is None:
            repo.delete(name)
        repo.delete(name + INPROGRESS)
    return dead


def backup_to(
    settings: Settings,
    repo: Repository,
    *,
    fmt: str = "custom",
    compress: str | None = None,
    database: str | None = None,
    progress: Progress | None = None,
) -> BackupResult:
    """Stream one backup into ``repo`` (custom or plain format)."""
    if fmt not in ("custom", "plain"):
        raise UsageError(
            f"--format {fmt} cannot stream to {repo.url}",
            hint="use custom or plain, or back up to a directory and `backup copy` it",
        )
    from moviectl.core.backups.crypt import recipients_of

    if compress is not None:  # a typo fails before anything connects or is written
        compression.choose(compress, fmt, "", "", frozenset(compression.METHODS))
    recipients = recipients_of(settings)  # a bad recipient is refused before anything runs
    key = signing_key(settings)  # so is a bad signing key
    settings, snap = _session_and_bucket(settings, repo, database)
    with snap:
        return _backup(settings, repo, snap, fmt, compress, database, progress, recipients, key)


def _session_and_bucket(
    settings: Settings, repo: Repository, database: str | None
) -> tuple[Settings, Any]:
    """The bucket checked (unreachable, wrong keys, no bucket: before pg_dump starts, its
    fault named first) beside the session's login: its round trip, and pg_dump's version
    probes, while psycopg is imported and logs in. (Threads start no child with a pre-exec
    hook: the cleanup, which may run rclone, waits for the main thread.)"""
    checked: list[BaseException] = []

    def check() -> None:
        try:
            repo.check()
        except BaseException as exc:
            checked.append(exc)

    bucket = threading.Thread(target=check, name="bucket-check", daemon=True)
    bucket.start()
    tools = threading.Thread(target=prefetch_tools, args=("pg_dump", settings), daemon=True)
    tools.start()
    try:
        session, snap = open_session(settings, "backup", database)
    except Exception:
        bucket.join()
        if checked:
            raise checked[0] from None
        raise
    try:
        bucket.join()
        tools.join()  # find_tool reads its cached answers, never probing pg_dump twice
    except BaseException:
        snap.close()
        raise
    if checked:
        snap.close()
        raise checked[0]
    return session, snap


def _backup(
    settings: Settings,
    repo: Repository,
    snap: Any,
    fmt: str,
    compress: str | None,
    database: str | None,
    progress: Progress | None,
    recipients: list[Any],
    key: Any,
) -> BackupResult:
    from moviectl.core.backups.crypt import encrypting

    target = settings.target(database)
    with contextlib.suppress(MoviectlError):
        clean_dead_uploads(repo)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    letter, suffix = FORMATS[fmt]
    name = new_name(target.database, started, suffix)
    owner = {"pid": os.getpid(), "host": this_host(), "started": started.isoformat()}
    repo.write_bytes(name + INPROGRESS, json.dumps(owner).encode())
    try:
        dumped = _stream(settings, target, snap, repo, name, letter, compress, progress, recipients)
        via, dump_version, facts, digest, size, stored, comp, dump_s = dumped
        man = Manifest(
            file=name,
            format=fmt,
            sha256=digest,
            size_bytes=size,
            database=target.database,
            server_version=facts.server_version,
            server_major=facts.server_major,
            pg_dump_version=dump_version,
            alembic_revision=facts.alembic_revision,
            row_counts=facts.row_counts,
            started_at=started.isoformat(),
            finished_at=datetime.now(UTC).isoformat(),
            seconds=round(time.monotonic() - t0, 3),
            compression=comp.spec,
            dump_seconds=round(dump_s, 3),
            **readability(fmt, dump_version, facts.server_major),
        )
        doc = asdict(man)
        if recipients:
            doc.update(encrypting(recipients, stored))
        sign(key, doc)  # last: the signature covers the encryption fields too
        repo.write_bytes(name + MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())
    except BaseException:
        with contextlib.suppress(Exception):  # best effort: the next run cleans the rest
            repo.delete(name)
            repo.delete(name + INPROGRESS)
        raise
    with contextlib.suppress(MoviectlError):
        repo.delete(name + INPROGRESS)
    return BackupResult(repo.where(name), repo.where(name + MANIFEST), man, via)


class _Pipe:
    """pg_dump's stdout as blocks, hashed and counted; a failed pg_dump ends it with an
    exception (so the upload is aborted instead of completed with a truncated dump)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.sha = hashlib.sha256()
        self.n = 0
        self.failed: int | None = None

    def blocks(self) -> Iterator[bytes]:
        assert self.proc.stdout is not None
        while block := self.proc.stdout.read(BLOCK):
            self.sha.update(block)
            self.n += len(block)
            yield block
        code = self.proc.wait()
        if code != 0:
            self.failed = code
            raise InputFileError(f"pg_dump exited with {code}")  # replaced by the caller


def _stream(
    settings: Settings,
    target: DbTarget,
    snap: Any,
    repo: Repository,
    name: str,
    letter: str,
    compress: str | None,
    progress: Progress | None,
    recipients: list[Any],
) -> tuple[str, str, DatabaseFacts, str, int, str | None, Compression, float]:
    """pg_dump on a snapshot exported on ``snap`` (the session's connection, closed by the
    caller), into ``repo`` as ``name``; (via, version, facts, sha256 and size of the dump,
    sha256 of the stored object when it differs, the compression, pg_dump's seconds)."""
    from psycopg import IsolationLevel

    from moviectl.core.backups.crypt import encrypt_blocks
    from moviectl.core.migrations.timeouts import to_ms

    lock_ms = to_ms(settings.stall_timeout)
    snap.execute(f"SET lock_timeout = {lock_ms}")
    snap.autocommit = False
    snap.isolation_level = IsolationLevel.REPEATABLE_READ
    snap.read_only = True
    major = server_major(snap)
    snap_id = str(snap.execute("SELECT pg_export_snapshot()").fetchone()[0])
    tls = target.wants_tls or bool(snap.pgconn.ssl_in_use)
    tool = find_tool("pg_dump", settings, major, tls=tls, prefer_major=major)
    argv = [
        tool.path,
        f"-F{letter}",
        "--no-password",
        f"--snapshot={snap_id}",
        f"--lock-wait-timeout={lock_ms}",
        "-d",
        target.child_conninfo(require_tls=tls),
    ]
    fmt = "plain" if letter == "p" else "custom"
    comp = compression.choose(compress, fmt, tool.path, tool.version, compressions(tool))
    argv += compression.z_argv(comp, tool.version)
    started = time.monotonic()
    with tempfile.TemporaryFile() as err:
        proc = popen_child(
            argv,
            death_signal=signal.SIGTERM,
            own_group=True,
            env=child_env(target),
            stdout=subprocess.PIPE,
            stderr=err,
        )
        pipe = _Pipe(proc)
        stored: dict[str, Any] = {}
        source = pipe.blocks()
        if recipients:
            source = encrypt_blocks(source, recipients, stored)
        watch = StallWatch.for_settings(settings, target, "the backup")
        watch.track(lambda: pipe.n)
        watch.on_stall(lambda: kill_group(proc))
        watch.watch_connection(snap)
        counting = _Facts(snap, proc)
        try:
            with watch:
                counting.start()  # beside the upload: pg_dump's pipe never waits on them
                if progress:
                    source = _reporting(source, pipe, progress)
                repo.put(name, source)
                facts = counting.result()
        except BaseException as exc:
            kill_group(proc)
            code = proc.wait()
            own = counting.stop()  # the row counts' own failure (pg_dump killed for it)
            # what failed first; a stall is the watch's error, whatever failed of it
            exc_stands = watch.stalled or not isinstance(exc, Exception)  # a stall, a signal
            cause = exc if own is None or exc_stands else own
            if cause is exc and (
                pipe.failed is not None or (code not in (0, -signal.SIGKILL) and code > 0)
            ):
                raise _dump_failed(err, code, snap, target, settings) from None
            if isinstance(cause, Exception) and is_lock_timeout(cause):
                raise lock_busy(snap, target, settings) from None
            if cause is exc:
                raise
            raise cause from None
        finally:
            if proc.stdout:
                proc.stdout.close()
        if watch.stalled:
            raise watch.error()
        seconds = time.monotonic() - started
    snap.rollback()
    snap.autocommit = True
    with contextlib.suppress(MoviectlError):
        clean_databases(snap)
    sha = pipe.sha.hexdigest()
    return tool.path, tool.version, facts, sha, pipe.n, stored.get("sha256"), comp, seconds


class _Facts:
    """The manifest's facts (version, revision, row counts) read on the snapshot's
    connection in a thread while pg_dump streams: read on the main thread they would stop
    draining pg_dump's pipe, and pg_dump with it, for as long as the counts take. Nothing
    else uses the connection meanwhile; a failure kills pg_dump, so the upload is aborted
    (never completed without its manifest)."""

    def __init__(self, snap: Any, proc: subprocess.Popen[bytes]) -> None:
        self.snap, self.proc = snap, proc
        self.facts: DatabaseFacts | None = None
        self.error: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._read, name="backup-facts", daemon=True)

    def _read(self) -> None:
        try:
            self.facts = database_facts(self.snap)
        except BaseException as exc:
            if not self.stopping:
                self.error = exc
                kill_group(self.proc)

    def start(self) -> None:
        self.thread.start()

    def result(self) -> DatabaseFacts:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.facts is not None
        return self.facts

    def stop(self) -> BaseException | None:
        """The backup failed: end the counts (cancelled if still running) before the
        connection is used again; their own error, if they had failed first."""
        self.stopping = True
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.snap.cancel_safe(timeout=5)
        if self.thread.ident is not None:
            self.thread.join()
        return self.error


def _dump_failed(err: Any, code: int, snap: Any, target: DbTarget, settings: Settings) -> Any:
    err.seek(0)
    stderr = err.read().decode(errors="replace")
    if lock_wait_failed(stderr):
        return lock_busy(snap, target, settings)
    return dump_error(stderr, code, target)


def _reporting(source: Iterator[bytes], pipe: _Pipe, progress: Progress) -> Iterator[bytes]:
    for block in source:
        progress(pipe.n)
        yield block
