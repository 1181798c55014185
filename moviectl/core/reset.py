"""`db reset`: drop the app database, create it again, migrate it to head, seed it.

Invariants: touches the app database alone (and its staging twin, below; never another
database on the server), and never a protected one (``infra/protect.py``: refused before
anything is dropped unless overridden). The drop terminates the database's sessions
(``WITH (FORCE)``).

The new database is made first, as ``moviectl_reset_<hash of the name>`` (moviectl's
``reset`` mark in its comment), and given the old one's protection mark *before* the old
one is dropped; then DROP and ``ALTER DATABASE … RENAME`` (a rename keeps the database's
settings, so the mark). So a kill -9 at any moment leaves either the old database, or no
app database and the marked staging one (the two statements apart), or the new database
marked, unmigrated or half seeded: never an unmarked copy of a protected database. The next
``db reset`` reads the staging database's mark as the app database's (the guard refuses it
without the override), drops it and starts again. Resets of one database are serialised
by a session advisory lock on the maintenance connection (gone with its process), held to
the end of the seed: two at once both succeed, one after the other.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from moviectl.core.migrations.runner import MigrateResult, upgrade
from moviectl.core.seed.load import SeedResult, seed
from moviectl.infra.admin import (
    SYSTEM_DATABASES,
    advisory_lock,
    create_database,
    database_comment,
    drop_database_force,
    ident,
    make_mark,
    read_mark,
)
from moviectl.infra.engine import connect
from moviectl.infra.errors import LockBusy, Refused
from moviectl.infra.held_signals import held
from moviectl.infra.protect import guard, marks, overridden, refusal, set_mark
from moviectl.infra.settings import Settings

SAMPLE_DEFAULT = 3  # as `moviectl up` seeds an empty database
RESET_LOCK_KEY = 0x6D6F7672  # "movr", with the name's hash: one reset of a database at a time
RESET_LOCK_WAIT = 300.0  # seconds a reset waits for another one of the same database
STAGING_PREFIX = "moviectl_reset_"


def staging_name(database: str) -> str:
    """The new database's name until it replaces ``database`` (fits in 63 bytes)."""
    return STAGING_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:16]


@dataclass
class ResetResult:
    database: str
    url: str
    existed: bool
    environment: str | None  # the protection mark it had, and has again
    migrated: MigrateResult
    seeded: SeedResult | None
    seed_skipped: str | None  # why no seed ran
    seconds: float


def reset(
    settings: Settings, *, sample: int | None = SAMPLE_DEFAULT, override: bool = False
) -> ResetResult:
    """Drop, recreate, migrate and (``sample`` rows; None: no seed) seed the app database."""
    started = time.monotonic()
    target = settings.session_target()
    if target.database in SYSTEM_DATABASES:
        raise Refused(f"{target.database} is a system database: refusing to reset it")
    preflight(settings, override=override)
    admin = target.with_database("postgres")
    with connect(admin, connect_timeout=settings.connect_timeout, session="the reset lock") as conn:
        _lock(conn, target.database)
        existed, environment = _swap(settings, conn, target.database, override)
        return _finish(settings, existed, environment, sample, started)


def preflight(settings: Settings, *, override: bool = False) -> None:
    """Refuse a protected app database before any prompt: its own mark, or (the app
    database gone or remade unmarked since a reset was killed between DROP and RENAME) the
    mark its staging database holds. Read-only; ``_swap`` checks again under the lock."""
    what = "reset (drop and recreate) it"
    target = settings.session_target()
    guard(settings, what, target=target, override=override)
    if overridden(settings, target.database, override):
        return
    staging = staging_name(target.database)
    admin = target.with_database("postgres")
    with connect(admin, connect_timeout=settings.connect_timeout) as conn:
        found = marks(conn)
        mark = read_mark(database_comment(conn, staging)[1]) or {}
    if found.get(staging) and not found.get(target.database) and mark.get("of") == target.database:
        where = f"{target.host}:{target.port}"
        raise refusal(target.database, found[staging], f"{what} ({staging} holds its mark)", where)


def _lock(conn: Any, database: str) -> None:
    """Wait (bounded) for any other reset of ``database``: a session lock, gone with us."""
    if not advisory_lock(conn, RESET_LOCK_KEY, database, RESET_LOCK_WAIT):
        raise LockBusy(
            f"another db reset of {database} has run for over {RESET_LOCK_WAIT:.0f} s",
            hint="wait for it, or end it (moviectl inspect)",
        )


def _swap(settings: Settings, conn: Any, database: str, override: bool) -> tuple[bool, str | None]:
    """Replace ``database`` by a new empty one carrying its mark; (existed, mark)."""
    from psycopg import sql

    staging = staging_name(database)
    existed = database_comment(conn, database)[0]
    environment = marks(conn, database).get(database)
    left, comment = database_comment(conn, staging)
    if left:  # an interrupted reset's: ours only if it carries our mark for this database
        mark = read_mark(comment) or {}
        if comment is None and existed and _holds_nothing(settings, staging):
            # kill -9 while its CREATE DATABASE ran (the backend finishes it, the COMMENT
            # never comes): the app database is untouched, this empty twin is ours to drop
            mark = {"kind": "reset", "of": database}
        if mark.get("kind") != "reset" or mark.get("of") != database:
            raise Refused(
                f"database {staging} exists but carries no moviectl reset mark for {database}",
                hint="moviectl did not make it: rename or drop it by hand",
            )
        # killed between DROP and RENAME, the staging database holds the app database's
        # mark (and an unmarked one may have been made since, by `db up`): the mark wins
        staged = marks(conn, staging).get(staging)
        if environment is None and staged is not None:
            environment = staged
            if not overridden(settings, database, override):
                t = settings.session_target()
                raise refusal(
                    database, staged, "reset (drop and recreate) it", f"{t.host}:{t.port}"
                )
        drop_database_force(conn, staging)
    new_mark = make_mark("reset", of=database)
    create_database(conn, settings.session_target(), staging, mark=new_mark)
    if environment is not None:
        set_mark(conn, staging, environment)
    with held():  # Ctrl-C / SIGTERM cannot come between the two (only kill -9 can)
        drop_database_force(conn, database)
        rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
        conn.execute(rename.format(ident(staging), ident(database)))
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(ident(database)))
    return existed, environment


def _holds_nothing(settings: Settings, name: str) -> bool:
    """Has database ``name`` no table, view, sequence or function of anyone's?"""
    with connect(settings.session_target().with_database(name)) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            "        WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema')"
            "     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            "        WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema')"
        ).fetchone()
    return row is not None and row[0] == 0


def _finish(
    settings: Settings,
    existed: bool,
    environment: str | None,
    sample: int | None,
    started: float,
) -> ResetResult:
    target = settings.session_target()
    migrated = upgrade(settings)
    seeded, skipped = None, None
    if sample is None:
        skipped = "--no-seed"
    else:
        skipped = _unseedable(settings)
        if skipped is None:
            seeded = seed(settings, sample=sample)
    return ResetResult(
        database=target.database,
        url=settings.target().url(),
        existed=existed,
        environment=environment,
        migrated=migrated,
        seeded=seeded,
        seed_skipped=skipped,
        seconds=round(time.monotonic() - started, 3),
    )


def _unseedable(settings: Settings) -> str | None:
    """Why moviectl's seed cannot load this schema (a service's may lack its tables)."""
    with connect(settings.session_target(), connect_timeout=settings.connect_timeout) as conn:
        missing = [
            name
            for name in ("movies", "seed_runs")
            if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None  # type: ignore[index]
        ]
    if missing:
        return f"the schema has no {' or '.join(missing)} table (moviectl's seed loads them)"
    return None
