"""`moviectl restore`: a checked backup into a new database, or over one after a safety backup.

``load_into`` and ``compare`` are shared with the restore drill (``verify.py``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moviectl.core.backups.dump import backup, free_job_slots
from moviectl.core.backups.foreign import read_backup
from moviectl.core.backups.leftovers import clean_databases, clean_partials, loading_mark
from moviectl.core.backups.manifest import Manifest, manifest_path
from moviectl.core.backups.sqlguard import check_sql_file, lines_of, run_psql_guarded
from moviectl.infra.admin import (
    create_database,
    database_comment,
    drop_database_force,
    protected_reason,
)
from moviectl.infra.engine import connect, open_session
from moviectl.infra.errors import CheckFailed, MoviectlError, Refused, Unreachable, UsageError
from moviectl.infra.pgtools import child_env, find_tool, first_error, popen_child, run_child
from moviectl.infra.server_facts import database_facts, server_major
from moviectl.infra.settings import DbTarget, Settings
from moviectl.infra.watchdog import StallWatch

# libpq's and the server's words for a server that stopped under a child tool (57P01
# admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, lost connections).
_SERVER_GONE = re.compile(
    r"server closed the connection unexpectedly|terminating connection due to "
    r"administrator command|the database system is shutting down|connection to server "
    r".* failed(?!.*too many c|.*connection slots)|no connection to the server|"  # not 53300
    r"could not receive data from server|SSL SYSCALL error: EOF detected"
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass
class RestoreResult:
    path: str
    database: str
    url: str
    created: bool
    safety_backup: str | None
    undo: str | None
    revision: str | None
    row_counts: dict[str, int]
    matches_manifest: bool | None  # None: no manifest to match (a file made elsewhere)
    differences: list[str]
    seconds: float
    verified: bool = False  # checksum and row counts matched the manifest
    manifest: str | None = None
    note: str | None = None


# Anything a user made, in any schema: relations, standalone types, functions, schemas.
USER_OBJECTS = r"""
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_%')
     + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_%' AND t.typrelid = 0 AND t.typelem = 0)
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\_%')
     + (SELECT count(*) FROM pg_namespace
        WHERE nspname NOT IN ('public', 'pg_catalog', 'information_schema')
          AND nspname NOT LIKE 'pg\_%')
"""


def maintenance_target(settings: Settings) -> DbTarget:
    return settings.target("postgres")


def database_state(settings: Settings, name: str) -> tuple[bool, bool]:
    """(exists, has tables) for database ``name``."""
    with connect(maintenance_target(settings), connect_timeout=settings.connect_timeout) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False, False
    with connect(settings.target(name), connect_timeout=settings.connect_timeout) as c:
        n = c.execute(USER_OBJECTS).fetchone()
    return True, bool(n and n[0])


def server_facts(settings: Settings) -> tuple[int, bool]:
    """(major version, whether moviectl's own connection to it is encrypted)."""
    with connect(maintenance_target(settings), connect_timeout=settings.connect_timeout) as c:
        return facts_on(c)


def facts_on(conn: Any) -> tuple[int, bool]:
    return server_major(conn), bool(conn.pgconn.ssl_in_use)


def create_database_for_restore(
    settings: Settings,
    name: str,
    *,
    drop_first: bool = False,
    loading: str | None = None,
    backup_dir: Path | None = None,
) -> None:
    """Create ``name`` (after dropping it, keeping its comment, with ``drop_first``).

    ``loading``: mark the new database as being loaded by this process (``restore`` or
    ``verify``), so that a killed run's half-loaded database is recognised and dropped.
    """
    admin = maintenance_target(settings)
    with connect(admin, connect_timeout=settings.connect_timeout) as c:
        clean_databases(c)  # what killed restores and drills left on this server
        for d in {Path(settings.backup_dir), *([backup_dir] if backup_dir else [])}:
            clean_partials(d)  # and what killed backups left
        comment = None
        if drop_first:  # keep the database's comment (e.g. moviectl's ownership mark)
            comment = database_comment(c, name)[1]
            drop_database_force(c, name)
        mark = loading_mark(loading) if loading else comment
        try:
            create_database(c, admin, name, mark=mark)  # made and marked, or neither
        except (KeyboardInterrupt, SystemExit):  # held, and raised once it was made
            if loading:  # made by this run: it goes again, as on any failure of the load
                with contextlib.suppress(Exception):
                    if database_comment(c, name)[1] == mark:  # this run's, not another's
                        drop_database_force(c, name)
            raise


def finish_loading(conn: Any, name: str) -> None:
    """The restore is complete: the database is the operator's now (mark removed)."""
    from psycopg import sql

    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(name)))


def drop_database(settings: Settings, name: str) -> None:
    with connect(maintenance_target(settings), connect_timeout=settings.connect_timeout) as c:
        drop_database_force(c, name)


def default_jobs(conn: Any, database: str | None = None, asked: int | None = None) -> int:
    """pg_restore workers: those ``asked`` for, else this host's cores, at most 4 (a restore
    beside production must not take the server's every core); within the connection slots
    the server, the role and ``database`` have free (``free_job_slots``: backup's rule)."""
    return max(1, min(asked or min(os.cpu_count() or 1, 4), free_job_slots(conn, database)))


def load_into(
    settings: Settings,
    path: Path,
    man: Manifest,
    target: DbTarget,
    jobs: int | None,
    facts: tuple[int, bool] | None = None,
) -> None:
    """``facts``: ``server_facts(settings)`` when the caller has them (one login less)."""
    env = child_env(target)
    server_major, encrypted = facts or server_facts(settings)
    tls = encrypted or target.wants_tls  # the tools must not fall back to a plain connection
    conninfo = target.child_conninfo(require_tls=tls)
    psql = [find_tool("psql", settings, tls=tls).path, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    psql += ["-d", conninfo]
    watch = StallWatch.for_settings(settings, target, f"the restore of {path.name}")
    dump_major = int(man.pg_dump_version.split(".")[0]) if man.pg_dump_version[:1].isdigit() else 0
    if man.format == "plain":  # through the guard, filtered for an older server
        res = _restore_via_sql(
            None, psql, path, env, watch, drop_timeout=dump_major >= 17 > server_major
        )
    else:
        tool = find_tool(
            "pg_restore",
            settings,
            man.pg_restore_min_major,
            tls=tls,
            prefer_major=max(server_major, man.pg_restore_min_major or 0),
        )
        if tool.major >= 17 > server_major:
            # A newer pg_restore talks settings an older server does not know
            # (transaction_timeout): have it write SQL, drop those lines, feed psql.
            res = _restore_via_sql(tool.path, psql, path, env, watch, drop_timeout=True)
        else:
            argv = [
                tool.path,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--no-password",  # never a prompt: it runs in a process group of its own
                "-d",
                conninfo,
                str(path.absolute()),  # "-v.dump" is a file, not options
            ]
            parallel = bool(jobs and jobs > 1 and man.format != "tar")  # tar: read serially
            argv[1:1] = ["-j", str(jobs)] if parallel else []
            res = run_child(argv, env=env, text=True, watch=watch, workers=parallel)
    if res.returncode != 0 and _SERVER_GONE.search(res.stderr or ""):
        raise Unreachable(  # the server stopped (shutdown, crash, terminated session): exit 3
            f"the server went away during the restore of {path.name} into "
            f"{target.database}: {first_error(res.stderr)}"
        )
    if res.returncode != 0:
        raise CheckFailed(
            f"restoring {path.name} into {target.database} failed: {first_error(res.stderr)}"
        )


def _restore_via_sql(
    pg_restore: str | None,
    psql: list[str],
    path: Path,
    env: dict[str, str],
    watch: StallWatch,
    *,
    drop_timeout: bool,
) -> subprocess.CompletedProcess[str]:
    """SQL (pg_restore's output, or a plain dump itself) into psql through the ``SqlGuard``
    (no meta-command but pg_dump's own), without the settings a newer pg_dump writes that an
    older server does not know (``transaction_timeout``) when ``drop_timeout``."""
    import tempfile

    if pg_restore is None:
        with open(path, "rb") as fh:
            return run_psql_guarded(
                psql, _filtered(lines_of(fh), drop_timeout), path.name, env, watch=watch
            )
    with tempfile.TemporaryFile() as gen_err:
        source = [pg_restore, "--no-owner", "--no-privileges", "-f", "-", str(path.absolute())]
        gen = popen_child(source, stdout=subprocess.PIPE, stderr=gen_err, env=env)
        assert gen.stdout is not None
        try:
            res = run_psql_guarded(
                psql,
                _filtered(lines_of(gen.stdout), drop_timeout),
                path.name,
                env,
                watch=watch,
                on_abort=gen.kill,
            )
        except BaseException:
            gen.kill()
            gen.wait()
            raise
        gen_code = gen.wait()
        gen_err.seek(0)
        err = res.stderr + gen_err.read().decode(errors="replace")
    return subprocess.CompletedProcess([], res.returncode or gen_code, "", err)


def _filtered(lines: Iterator[bytes], drop_timeout: bool) -> Iterator[bytes]:
    for line in lines:
        if not (drop_timeout and line.startswith(b"SET transaction_timeout")):
            yield line


def _create_new(settings: Settings, man: Manifest, path: Path) -> str:
    """Create and mark ``<db>_restore_<time>_<random>``; a name taken (by a restore started
    the same second) is never reused: CREATE DATABASE fails, another name is drawn."""
    from psycopg import errors

    for _ in range(8):
        stamp = f"{datetime.now(UTC):%Y%m%d%H%M%S}_{secrets.token_hex(3)}"
        name = f"{man.database[:32]}_restore_{stamp}"
        if not _NAME.fullmatch(name):
            name = f"movies_restore_{stamp}"
        try:
            create_database_for_restore(settings, name, loading="restore", backup_dir=path.parent)
        except errors.DuplicateDatabase:
            continue
        return name
    raise CheckFailed("could not find a free name for the restored database")


def compare(man: Manifest, rev: str | None, counts: dict[str, int]) -> list[str]:
    diffs = []
    if rev != man.alembic_revision:
        diffs.append(f"alembic revision {rev} != manifest {man.alembic_revision}")
    for table, n in sorted(man.row_counts.items()):
        if counts.get(table) != n:
            diffs.append(f"{table}: {counts.get(table)} rows != manifest {n}")
    return diffs


def restore(
    settings: Settings,
    path: Path,
    *,
    into: str | None = None,
    force: bool = False,
    jobs: int | None = None,
    hashed: str | None = None,
) -> RestoreResult:
    """``hashed``: the file's sha256 as computed while it was downloaded (not read again)."""
    started = time.monotonic()
    # a file made elsewhere: checked as far as it can be
    man, has_manifest = read_backup(settings, path, hashed)
    if man.format == "plain":  # before anything is created, dropped or backed up
        check_sql_file(path)
    settings, admin = open_session(settings, "restore", "postgres")  # never through a pooler
    with admin:  # the server's facts on the login that proved it
        facts = facts_on(admin)
        if man.format in ("custom", "directory"):  # an explicit --jobs within the slots too
            jobs = default_jobs(admin, into, jobs)
    server_major = facts[0]
    if man.server_major > server_major:
        raise Refused(
            f"{path.name} comes from PostgreSQL {man.server_major}; this server is "
            f"PostgreSQL {server_major}: refusing to restore it",
            hint="restore into a server of the same or a newer major version",
        )
    if into is None:  # a new database of a name nobody else has (created atomically)
        name = _create_new(settings, man, path)
        exists = nonempty = False
    else:
        name = into
        if not _NAME.fullmatch(name):
            raise UsageError(
                f"bad database name {name!r}", hint="letters, digits and _ (63 at most)"
            )
        with connect(maintenance_target(settings), connect_timeout=settings.connect_timeout) as c:
            reason = protected_reason(c, name)
        if reason:
            raise Refused(
                f"refusing to restore into {name!r}: {reason} (with or without --force)",
                hint="restore into a new database: omit --into, or name one that is yours",
            )
        exists, nonempty = database_state(settings, name)
    safety = undo = None
    if exists and nonempty:
        if not force:
            raise Refused(
                f"database {name!r} exists and is not empty (tables, types, functions or "
                "schemas): refusing to restore into it",
                hint="restore into a new database (omit --into), or pass --force: moviectl "
                "then takes a safety backup of it first",
            )
        safe = backup(settings, database=name)
        safety = safe.path
        undo = shlex.join(["moviectl", "restore", safe.path, "--into", name, "--force", "--yes"])
    elif not exists and into is not None:
        create_database_for_restore(settings, name, loading="restore", backup_dir=path.parent)
    target = settings.target(name)
    try:
        if undo:  # from here on, every way out says what is left and how to undo it
            create_database_for_restore(settings, name, drop_first=True)
        load_into(settings, path, man, target, jobs, facts)
    except BaseException as exc:
        left = None
        if undo:
            left = (
                f"{name!r} was replaced and may be empty or incomplete; the safety backup "
                f"is {safety}; put it back with: {undo}"
            )
        if isinstance(exc, Unreachable):  # the server is gone: no waiting on it again
            exc.hint = left or (
                f"{name!r} stays half-loaded and marked; the next restore or backup verify "
                "drops it (or DROP DATABASE it yourself)"
            )
        elif not exists:  # all or nothing: the database this restore created goes again
            with contextlib.suppress(Exception):
                drop_database(settings, name)
        elif left and isinstance(exc, MoviectlError):
            exc.hint = left
        elif left:  # Ctrl-C, SIGTERM: the CLI prints the exception's notes
            exc.add_note(left)
        raise
    with connect(target, connect_timeout=settings.connect_timeout) as c:  # one login for both
        if not exists:
            finish_loading(c, name)
        _, _, rev, counts = database_facts(c)
    diffs = compare(man, rev, counts) if has_manifest else []
    return RestoreResult(
        str(path),
        name,
        target.url(),
        not exists,
        safety,
        undo,
        rev,
        counts,
        not diffs if has_manifest else None,
        diffs,
        round(time.monotonic() - started, 3),
        verified=has_manifest and not diffs,
        manifest=str(manifest_path(path)) if has_manifest else None,
        note=None if has_manifest else man.note,
    )
