"""Alembic, driven from settings: upgrade, downgrade, status, history, drift check.

The migration scripts ship inside the package (``moviectl/_alembic`` in a wheel,
``alembic/`` in a checkout), so this works from any directory. Online runs hold
a PostgreSQL advisory lock; a second migration waits a bounded time and then
fails naming the holder.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.engine import db_errors, make_engine
from moviectl.errors import LockBusy, MoviectlError, ToolMissing, UnknownRevision
from moviectl.settings import DbTarget, Settings

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from sqlalchemy.engine import Connection

MIGRATION_LOCK_KEY = 0x6D6F7669  # "movi": one key per database, shared with `alembic` by hand


def script_location() -> Path:
    """The directory holding env.py and versions/ (shipped in the wheel or the checkout's)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_alembic", here.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ToolMissing("moviectl's migration scripts are missing from this installation")


def alembic_config(settings: Settings) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()).replace("%", "%%"))
    cfg.attributes["settings"] = settings
    return cfg


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(script_location()))


_REV_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.+)$", re.MULTILINE)


def head_revision() -> str | None:
    """The head revision, read from the scripts without importing Alembic (hot paths).

    Falls back to Alembic's own answer when the scripts are not a single linear chain.
    """
    revs: set[str] = set()
    downs: set[str] = set()
    for path in (script_location() / "versions").glob("*.py"):
        fields = dict(_REV_LINE.findall(path.read_text()))
        try:
            rev = ast.literal_eval(fields["revision"].strip())
            down = ast.literal_eval(fields.get("down_revision", "None").strip())
        except (KeyError, ValueError, SyntaxError):
            return script_directory().get_current_head()
        if not isinstance(rev, str) or not isinstance(down, str | None):
            return script_directory().get_current_head()
        revs.add(rev)
        if down:
            downs.add(down)
    heads = revs - downs
    return heads.pop() if len(heads) == 1 else script_directory().get_current_head()


def scripts_fingerprint() -> str:
    """sha256 of every migration script's content (names test-database templates)."""
    import hashlib

    digest = hashlib.sha256()
    root = script_location()
    for path in [*sorted((root / "versions").glob("*.py")), root / "env.py"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool = False
    is_current: bool = False


@dataclass
class MigrationStatus:
    database: str
    url: str
    current: str | None
    head: str | None
    pending: list[Revision] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@dataclass
class MigrateResult:
    database: str
    url: str
    direction: str  # "upgrade" | "downgrade" | "none"
    from_revision: str | None
    to_revision: str | None
    steps: list[Revision]
    seconds: float


@dataclass
class DriftReport:
    database: str
    current: str | None
    head: str | None
    differences: list[str]

    @property
    def clean(self) -> bool:
        return not self.differences


def _rev(script: Any, current: str | None = None, head: str | None = None) -> Revision:
    return Revision(
        revision=script.revision,
        down_revision=script.down_revision
        if isinstance(script.down_revision, str | None)
        else ",".join(script.down_revision),
        message=(script.doc or "").splitlines()[0] if script.doc else "",
        is_head=script.revision == head,
        is_current=script.revision == current,
    )


def _resolve(scripts: ScriptDirectory, rev: str) -> str | None:
    """A revision name (``head``, ``base``, id, prefix) to its id; unknown ones are usage errors."""
    from alembic.util import CommandError

    if rev == "base":
        return None
    try:
        found = scripts.get_revision(rev)
    except CommandError as exc:
        raise UnknownRevision(f"unknown revision {rev!r}: {exc}") from None
    if found is None:
        raise UnknownRevision(f"unknown revision {rev!r}")
    return found.revision


def current_revision(settings: Settings, database: str | None = None) -> str | None:
    from alembic.runtime.migration import MigrationContext

    target = settings.target(database)
    engine = make_engine(settings, target=target, pooled=False)
    try:
        with db_errors(target, settings.connect_timeout), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def _between(scripts: ScriptDirectory, upper: str | None, lower: str | None) -> list[Revision]:
    """Revisions after ``lower`` up to and including ``upper``, oldest first."""
    if upper == lower or upper is None:
        return []
    head = scripts.get_current_head()
    revs = list(scripts.iterate_revisions(upper, lower or "base"))
    return [_rev(r, head=head) for r in reversed(revs) if r.revision != lower]


def status(settings: Settings, database: str | None = None) -> MigrationStatus:
    scripts = script_directory()
    head = scripts.get_current_head()
    current = current_revision(settings, database)
    target = settings.target(database)
    pending = _between(scripts, head, current) if current != head else []
    return MigrationStatus(target.database, target.url(), current, head, pending)


def history(settings: Settings, *, with_current: bool = True) -> list[Revision]:
    scripts = script_directory()
    head = scripts.get_current_head()
    current = current_revision(settings) if with_current else None
    return [_rev(s, current, head) for s in reversed(list(scripts.walk_revisions()))]


def _run(settings: Settings, direction: str, to: str, database: str | None) -> MigrateResult:
    from alembic import command
    from alembic.util import CommandError

    scripts = script_directory()
    wanted = _resolve(scripts, to)
    target = settings.target(database)
    run_settings = settings if database is None else settings_for(settings, target)
    started = time.monotonic()
    cfg = alembic_config(run_settings)
    try:
        with db_errors(target, settings.connect_timeout):
            if direction == "upgrade":
                command.upgrade(cfg, to)
            else:
                command.downgrade(cfg, "base" if wanted is None else wanted)
    except CommandError as exc:
        raise MoviectlError(f"migration failed: {exc}") from None
    after = current_revision(run_settings)
    head = scripts.get_current_head()
    steps = [_rev(scripts.get_revision(r), head=head) for r in cfg.attributes.get("applied", [])]
    before = cfg.attributes.get("from_revision")
    return MigrateResult(
        database=target.database,
        url=target.url(),
        direction=direction if steps else "none",
        from_revision=before,
        to_revision=after,
        steps=steps,
        seconds=round(time.monotonic() - started, 3),
    )


def settings_for(settings: Settings, target: DbTarget) -> Settings:
    """These settings, pointed at ``target`` (another database, or another user)."""
    from pydantic import SecretStr

    return settings.model_copy(update={"database_url": SecretStr(target.url(masked=False))})


def upgrade(settings: Settings, to: str = "head", database: str | None = None) -> MigrateResult:
    """Upgrade the app database (or ``database``) to ``to`` (default head)."""
    return _run(settings, "upgrade", to, database)


def downgrade(settings: Settings, to: str, database: str | None = None) -> MigrateResult:
    """Downgrade to revision ``to`` (``base`` removes everything)."""
    return _run(settings, "downgrade", to, database)


def offline_sql(settings: Settings, to: str = "head", downgrade_from: str | None = None) -> str:
    """The SQL an upgrade would run, without connecting (``migrate --sql``)."""
    import io

    from alembic import command

    _resolve(script_directory(), to)
    buf = io.StringIO()
    cfg = alembic_config(settings)
    cfg.output_buffer = buf
    command.upgrade(cfg, to if downgrade_from is None else f"{downgrade_from}:{to}", sql=True)
    return buf.getvalue()


def check(settings: Settings) -> DriftReport:
    """Compare the models with the live database (autogenerate); empty list = no drift."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from moviectl.models import metadata

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and name == "alembic_version")

    target = settings.target()
    engine = make_engine(settings, pooled=False)
    try:
        with db_errors(target, settings.connect_timeout), engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            diffs = compare_metadata(ctx, metadata)
            current = ctx.get_current_revision()
    finally:
        engine.dispose()
    return DriftReport(
        database=target.database,
        current=current,
        head=script_directory().get_current_head(),
        differences=[_describe_diff(d) for d in diffs],
    )


def _describe_diff(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(_describe_diff(d) for d in diff)
    kind, *rest = diff
    names = []
    for item in rest:
        name = getattr(item, "name", None)
        if name is not None:
            names.append(str(name))
        elif isinstance(item, str):
            names.append(item)
    return f"{kind} {' '.join(names)}".strip()


# ---- the advisory lock ------------------------------------------------------------------
@dataclass
class LockHolder:
    pid: int
    application_name: str
    user: str
    since: datetime | None
    client: str | None


def lock_holders(conn: Connection, key: int = MIGRATION_LOCK_KEY) -> list[LockHolder]:
    from sqlalchemy import text

    rows = conn.execute(
        text(
            """
            SELECT a.pid, a.application_name, a.usename, a.backend_start,
                   host(a.client_addr) AS client
            FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = (CAST(:key AS bigint) >> 32)::oid
              AND l.objid = (CAST(:key AS bigint) & 4294967295)::oid AND l.objsubid = 1
              AND a.pid <> pg_backend_pid()
            """
        ),
        {"key": key},
    ).all()
    return [
        LockHolder(r.pid, r.application_name or "", r.usename, r.backend_start, r.client)
        for r in rows
    ]


@contextmanager
def migration_lock(
    conn: Connection, timeout: float, target: DbTarget, key: int = MIGRATION_LOCK_KEY
) -> Iterator[None]:
    """Hold the session-level migration lock; wait at most ``timeout`` seconds for it."""
    from sqlalchemy import text

    deadline = time.monotonic() + timeout
    while True:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        conn.commit()
        if got:
            break
        if time.monotonic() >= deadline:
            holders = lock_holders(conn, key)
            conn.commit()
            who = (
                ", ".join(
                    f"pid {h.pid} ({h.application_name or 'no application_name'}, user {h.user}"
                    + (f", since {h.since:%Y-%m-%d %H:%M:%S %Z}" if h.since else "")
                    + ")"
                    for h in holders
                )
                or "another session"
            )
            raise LockBusy(
                f"another migration holds the migration lock on {target.where}: {who}",
                hint="wait for it to finish, or raise MOVIE_MIGRATE_LOCK_TIMEOUT; "
                "if it is stuck: SELECT pg_terminate_backend(<pid>)",
                holders=[h.pid for h in holders],
            )
        time.sleep(0.1)
    try:
        yield
    finally:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
