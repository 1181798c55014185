"""Alembic, driven from settings: upgrade, downgrade, status, history, offline SQL.

Online runs hold the migration lock (``lock.py``, taken in ``alembic/env.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moviectl.core.migrations.scripts import (
    Revision,
    alembic_config,
    resolve_revision,
    revision_of,
    script_directory,
)
from moviectl.core.restore_points import mark_before_migration
from moviectl.infra.engine import db_errors, make_engine, require_session
from moviectl.infra.errors import MoviectlError, UnknownRevision, UsageError
from moviectl.infra.settings import Settings

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory


@dataclass
class MigrateResult:
    database: str
    url: str
    direction: str  # "upgrade" | "downgrade" | "none"
    from_revision: str | None
    to_revision: str | None
    steps: list[Revision]
    seconds: float


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
    return [revision_of(r, head=head) for r in reversed(revs) if r.revision != lower]


def unknown_revision(database: str, current: str) -> UnknownRevision:
    return UnknownRevision(
        f"database {database} is at revision {current!r}, which this code does not know "
        "(made by newer code, or its migration was removed)",
        hint="run the moviectl that migrated it, or see `moviectl migrate history`; "
        "`moviectl migrate` cannot move it from an unknown revision",
    )


def known(scripts: ScriptDirectory, rev: str | None) -> bool:
    from alembic.util import CommandError

    if rev is None:
        return True
    try:
        return scripts.get_revision(rev) is not None
    except CommandError:
        return False


def history(settings: Settings, *, with_current: bool = True) -> list[Revision]:
    scripts = script_directory()
    head = scripts.get_current_head()
    current = current_revision(settings) if with_current else None
    return [revision_of(s, current, head) for s in reversed(list(scripts.walk_revisions()))]


def _run(settings: Settings, direction: str, to: str, database: str | None) -> MigrateResult:
    from alembic import command
    from alembic.util import CommandError

    scripts = script_directory()
    wanted = resolve_revision(scripts, to)
    settings = require_session(settings, "migrate", database)  # the lock is a session's
    target = settings.target(database)
    run_settings = settings if database is None else settings.for_target(target)
    current = current_revision(run_settings)
    if not known(scripts, current):
        raise unknown_revision(target.database, str(current))
    if direction == "upgrade" and wanted is not None and current is not None and current != wanted:
        ahead = {r.revision for r in scripts.iterate_revisions(current, "base")}
        if wanted in ahead:  # the target is behind the database: that is a downgrade
            raise UsageError(
                f"database {target.database} is at {current}, past {wanted}: "
                "`migrate --to` only upgrades",
                hint=f"to go back: moviectl migrate down --to {wanted}",
            )
    if wanted != current:  # a named restore point first, when WAL archiving is on
        mark_before_migration(settings)
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
    steps = [
        revision_of(scripts.get_revision(r), head=head) for r in cfg.attributes.get("applied", [])
    ]
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

    resolve_revision(script_directory(), to)
    buf = io.StringIO()
    cfg = alembic_config(settings)
    cfg.output_buffer = buf
    command.upgrade(cfg, to if downgrade_from is None else f"{downgrade_from}:{to}", sql=True)
    return buf.getvalue()
