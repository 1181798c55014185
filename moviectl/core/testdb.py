"""Throwaway test databases cloned from a template migrated once.

The template ``movies_tpl_<hash>`` is named by a hash of the migration scripts, the
models' source and the SQLAlchemy/Alembic versions (read without importing them). It is
built once, under an advisory lock, by running the real migrations; every test database
is a ``CREATE DATABASE ... TEMPLATE`` clone of it (tens of milliseconds). Each database
moviectl makes carries an ownership mark (``COMMENT ON DATABASE``); ``drop`` and
``prune`` (``testdb_prune.py``) touch nothing without it.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import os
import re
import secrets
import socket
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from moviectl.infra.admin import (
    TEMPLATE_PREFIX,
    TEST_PREFIX,
    admin_source,
    admin_target,
    advisory_lock,
    clone_template,
    comment_database,
    create_database,
    database_comment,
    databases_named_like,
    drop_database_force,
    make_mark,
    make_template,
    read_mark,
)
from moviectl.infra.engine import connect, db_errors
from moviectl.infra.errors import LockBusy, Refused, UsageError
from moviectl.infra.processes import pid_alive
from moviectl.infra.protect import marks, overridden, refusal
from moviectl.infra.settings import DbTarget, Settings

TEST_NAME = re.compile(r"^movies_test_[0-9a-f]{8,32}$")
TEMPLATE_NAME = re.compile(r"^movies_tpl_[0-9a-f]{12}$")
TEMPLATE_LOCK_KEY = 0x6D6F7674  # "movt"


@dataclass
class TestDatabase:
    name: str
    url: str  # masked
    template: str | None
    created_at: datetime | None
    expires_at: datetime | None
    owner: str | None
    size_bytes: int | None = None
    kept: bool = False
    full_url: str | None = field(default=None, repr=False, metadata={"secret": True})

    __test__ = False  # not a pytest test class
    __json_extra__ = ("age_seconds",)

    @property
    def age_seconds(self) -> float | None:
        if self.created_at is None:
            return None
        return (datetime.now(UTC) - self.created_at).total_seconds()


MAX_TTL_DAYS = 36500  # a century: longer is a typo


SEEDING_TTL = timedelta(hours=1)  # a database being seeded expires by then at the latest


def parse_ttl(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text or "")
    if not m or int(m.group(1)) == 0:
        raise UsageError(f"bad duration {text!r}", hint="use a number and a unit: 90s, 30m, 2h, 1d")
    n, unit = int(m.group(1)), m.group(2)
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds > MAX_TTL_DAYS * 86400:
        raise UsageError(f"duration {text!r} is too long", hint=f"at most {MAX_TTL_DAYS}d")
    return timedelta(seconds=seconds)


# moviectl's own models: the module and the constants its CHECKs use (read, not imported)
MODEL_SOURCES = ("moviectl.infra.models", "moviectl.infra.movie_fields")
SCHEMA_TOOLS = ("sqlalchemy", "alembic")  # their versions: the DDL the migrations emit


def template_hash() -> str:
    """12 hex digits over the configured migration scripts (the service's or moviectl's),
    the models' module's source and the schema tools' versions: any change names a new
    template. Imports neither SQLAlchemy nor Alembic (``testdb create`` starts fast)."""
    from importlib import metadata
    from importlib.util import find_spec

    from moviectl.core.migrations.project import (
        DEFAULT_METADATA,
        metadata_source_file,
        schema_source,
    )
    from moviectl.core.migrations.scripts import scripts_fingerprint

    source = schema_source()
    digest = hashlib.sha256(scripts_fingerprint().encode())
    digest.update(source.metadata.encode())
    if source.metadata != DEFAULT_METADATA:
        digest.update(metadata_source_file(source))
    for module in MODEL_SOURCES if source.metadata == DEFAULT_METADATA else ():
        spec = find_spec(module)
        origin = spec.origin if spec else None
        digest.update(module.encode())
        digest.update(Path(origin).read_bytes() if origin else b"missing")
    for dist in SCHEMA_TOOLS:
        digest.update(f"{dist}=={metadata.version(dist)}".encode())
    return digest.hexdigest()[:12]


def admin_session(settings: Settings, target: DbTarget | None = None) -> Any:
    """An admin connection that is a session of its own: the template lock is a session
    lock, and a pooler would keep idle connections to a template nobody could clone."""
    return connect(
        target or admin_target(settings),
        connect_timeout=settings.connect_timeout,
        session="a test database",
        source=admin_source(settings),
    )


# ---- the template ------------------------------------------------------------------------
def ensure_template(
    settings: Settings, target: DbTarget | None = None, timeout: float = 300
) -> str:
    """Name of a ready template for the current migrations, building it if needed."""
    admin = target or admin_target(settings)
    name = TEMPLATE_PREFIX + template_hash()
    with admin_session(settings, admin) as conn:
        if _template_ready(conn, name):
            return name
        if not advisory_lock(conn, TEMPLATE_LOCK_KEY, None, timeout):
            raise LockBusy(f"timed out waiting for another process to build template {name}")
        try:
            if _template_ready(conn, name):  # built by whoever held the lock
                return name
            exists, comment = database_comment(conn, name)
            if exists:  # half-built by a killed builder: rebuild only what carries our mark
                mark = read_mark(comment)
                if not mark or mark.get("kind") != "template":
                    raise Refused(
                        f"database {name!r} exists but carries no moviectl template mark: "
                        "refusing to drop it",
                        hint="it is not moviectl's; rename or drop it yourself, "
                        "or point MOVIE_DATABASE_URL_TEST at another server",
                    )
                drop_database_force(conn, name)
            building = make_mark("template", state="building", created=_now())
            create_database(conn, admin, name, None, mark=building)
            _migrate(settings, admin.with_database(name))
            make_template(conn, name)
            comment_database(conn, name, make_mark("template", state="ready", created=_now()))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TEMPLATE_LOCK_KEY,))
    return name


def _template_ready(conn: Any, name: str) -> bool:
    mark = read_mark(database_comment(conn, name)[1])
    return bool(mark and mark.get("kind") == "template" and mark.get("state") == "ready")


def _migrate(settings: Settings, target: DbTarget) -> None:
    from moviectl.core.migrations import runner

    runner.upgrade(settings.for_target(target))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- test databases ----------------------------------------------------------------------
def create(
    settings: Settings,
    *,
    ttl: timedelta | None = None,
    owner: str | None = None,
    target: DbTarget | None = None,
    template: str | None = None,
    conn: Any = None,
    strategy: str | None = None,
    seeding: bool = False,
) -> TestDatabase:
    """Clone the template into a fresh ``movies_test_<hex>`` database.

    ``conn``: an open autocommit admin connection to reuse (the pytest plugin keeps one);
    ``strategy``: its ``admin.clone_strategy`` (asked once by a caller making many);
    ``seeding``: data goes in next, so the mark says so and expires within an hour until
    ``seeding_done`` (a run killed meanwhile leaves a database ``prune`` recognises).
    """
    admin = target or admin_target(settings)
    tpl = template or ensure_template(settings, admin)
    name = TEST_PREFIX + secrets.token_hex(8)
    created = datetime.now(UTC).replace(microsecond=0)
    if seeding:
        ttl = min(ttl or SEEDING_TTL, SEEDING_TTL)
    expires = created + ttl if ttl else None
    who = owner or f"{getpass.getuser()}@{socket.gethostname()} pid {os.getpid()}"
    mark = make_mark(
        "test",
        owner=who,
        created=created.isoformat(),
        expires=expires.isoformat() if expires else None,
        template=tpl,
        **({"state": "seeding"} if seeding else {}),
    )
    with (
        contextlib.nullcontext(conn) if conn is not None else admin_session(settings, admin) as conn
    ):
        clone_template(conn, admin, name, tpl, strategy, mark=mark)
    db_target = admin.with_database(name)
    return TestDatabase(
        name, db_target.url(), tpl, created, expires, who, full_url=db_target.url(masked=False)
    )


def seeding_done(
    settings: Settings, db: TestDatabase, ttl: timedelta | None, target: DbTarget | None = None
) -> TestDatabase:
    """The mark of a database ``create(seeding=True)`` made, once its data is in: the
    expiry asked for (none: kept until dropped), no seeding state."""
    admin = target or admin_target(settings)
    expires = db.created_at + ttl if ttl and db.created_at else None
    mark = make_mark(
        "test",
        owner=db.owner,
        created=db.created_at.isoformat() if db.created_at else None,
        expires=expires.isoformat() if expires else None,
        template=db.template,
    )
    with admin_session(settings, admin) as conn:
        comment_database(conn, db.name, mark)
    return replace(db, expires_at=expires)


def as_test_db(admin: DbTarget, row: dict[str, Any]) -> TestDatabase:
    mark = row["mark"] or {}

    def ts(key: str) -> datetime | None:
        v = mark.get(key)
        return datetime.fromisoformat(v) if v else None

    return TestDatabase(
        name=row["name"],
        url=admin.with_database(row["name"]).url(),
        template=mark.get("template"),
        created_at=ts("created"),
        expires_at=ts("expires"),
        owner=mark.get("owner"),
        size_bytes=row["size"],
    )


def list_databases(settings: Settings, target: DbTarget | None = None) -> list[TestDatabase]:
    """moviectl's test databases on the server (unmarked look-alikes are not listed)."""
    admin = target or admin_target(settings)
    with admin_session(settings, admin) as conn:
        rows = databases_named_like(conn, TEST_PREFIX, sizes=True)
    return [as_test_db(admin, r) for r in rows if (r["mark"] or {}).get("kind") == "test"]


def check_droppable(conn: Any, name: str, app_database: str | None = None) -> None:
    """The safety rail: only marked ``movies_test_<hex>`` databases may be dropped."""
    if name == app_database or not TEST_NAME.fullmatch(name):
        raise Refused(
            f"refusing to drop {name!r}: not a moviectl test database name ({TEST_PREFIX}<hex>)",
            hint="`moviectl testdb list` shows the databases this command may drop",
        )
    exists, comment = database_comment(conn, name)
    if not exists:
        raise UsageError(
            f"test database {name!r} does not exist", hint="see `moviectl testdb list`"
        )
    mark = read_mark(comment)
    if not mark or mark.get("kind") != "test":
        raise Refused(
            f"refusing to drop {name!r}: it carries no moviectl ownership mark",
            hint="moviectl only drops databases it created; drop it by hand if you must",
        )


def drop(settings: Settings, names: list[str], *, target: DbTarget | None = None) -> list[str]:
    """Drop the named test databases (after the safety rail checked every one)."""
    admin = target or admin_target(settings)
    app_db = settings.target().database
    with admin_session(settings, admin) as conn:
        protected = marks(conn)  # never a protected database, whatever its name or mark
        for name in names:
            check_droppable(conn, name, app_db)
            if name in protected and not overridden(settings, name, False):
                raise refusal(name, protected[name], "drop it", f"{admin.host}:{admin.port}")
        for name in names:
            # the driver's errors only: anything else is a bug, not the user's (exit 10)
            with db_errors(admin.with_database(name), settings.connect_timeout):
                drop_database_force(conn, name)
    return names


POOL_OWNER_PREFIX = "pytest pool "  # "pytest pool <host> pid <pid>": a test run's clone pool


def pool_owner_tag() -> str:
    """The owner mark of this process's clone pool."""
    return f"{POOL_OWNER_PREFIX}{socket.gethostname()} pid {os.getpid()}"


def pool_pid_on_this_host(owner: str | None) -> int | None:
    """The pid in a pool owner mark made on this host; None for any other mark or host."""
    prefix = f"{POOL_OWNER_PREFIX}{socket.gethostname()} pid "
    pid = (owner or "").removeprefix(prefix)
    return int(pid) if (owner or "").startswith(prefix) and pid.isdigit() else None


def in_use_by_a_live_run(db: TestDatabase) -> bool:
    """Is ``db`` held by a test run (a pytest pool) whose process on this host still runs?"""
    pid = pool_pid_on_this_host(db.owner)
    return pid is not None and pid_alive(pid)


def drop_all(settings: Settings, *, target: DbTarget | None = None) -> list[str]:
    """Every marked test database, but those a running test session holds right now."""
    names = [d.name for d in list_databases(settings, target) if not in_use_by_a_live_run(d)]
    return drop(settings, names, target=target) if names else []
