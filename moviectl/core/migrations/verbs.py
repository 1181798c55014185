"""The weekly verbs on top of the runner: ``stamp``, ``down --steps N``, ``redo``.

``stamp`` records a revision without running a migration (a database created outside
migrations, by a restore or by hand); it runs under the migration lock like any migration.
``down --steps N`` names the revision N steps below the current one and downgrades to it;
``redo`` downgrades one step and upgrades back (the author's loop for the newest migration).
Both refuse a protected database (``infra/protect.py``) before changing anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from moviectl.core.migrations.runner import (
    MigrateResult,
    current_revision,
    downgrade,
    known,
    unknown_revision,
    upgrade,
)
from moviectl.core.migrations.scripts import alembic_config, resolve_revision, script_directory
from moviectl.infra.engine import db_errors, require_session
from moviectl.infra.errors import MoviectlError, UsageError
from moviectl.infra.protect import guard
from moviectl.infra.settings import Settings


@dataclass
class StampResult:
    database: str
    url: str
    from_revision: str | None
    to_revision: str | None
    seconds: float


@dataclass
class RedoResult:
    database: str
    revision: str
    down: MigrateResult
    up: MigrateResult


def steps_below(settings: Settings, steps: int) -> str:
    """The revision ``steps`` below the database's current one (``base`` past the first)."""
    if steps < 1:
        raise UsageError(f"--steps must be at least 1, not {steps}")
    scripts = script_directory()
    current = current_revision(settings)
    target = settings.target()
    if current is None:
        raise UsageError(
            f"database {target.database} has no migrations applied: nothing to go down from"
        )
    if not known(scripts, current):
        raise unknown_revision(target.database, current)
    rev: str | None = current
    for _ in range(steps):
        if rev is None:
            break
        down = scripts.get_revision(rev).down_revision
        if isinstance(down, tuple | list):
            raise UsageError(
                f"revision {rev} merges {', '.join(down)}: --steps cannot choose a branch",
                hint="name the revision: moviectl migrate down --to REV",
            )
        rev = down
    return rev or "base"


def guarded_downgrade(settings: Settings, to: str, *, override: bool = False) -> MigrateResult:
    guard(settings, f"migrate down to {to}", override=override)
    return downgrade(settings, to)


def redo(settings: Settings, *, override: bool = False) -> RedoResult:
    """Down one step, then up again to where the database was."""
    current = current_revision(settings)
    if current is None:
        raise UsageError(f"database {settings.target().database} has no migration to redo")
    below = steps_below(settings, 1)
    guard(settings, f"redo {current} (downgrade to {below})", override=override)
    down = downgrade(settings, below)
    up = upgrade(settings, current)
    return RedoResult(settings.target().database, current, down, up)


def stamp(settings: Settings, rev: str) -> StampResult:
    """Record ``rev`` as the database's revision without running migrations."""
    from alembic import command
    from alembic.util import CommandError

    scripts = script_directory()
    wanted = resolve_revision(scripts, rev)
    settings = require_session(settings, "migrate stamp")
    target = settings.target()
    before = current_revision(settings)
    started = time.monotonic()
    cfg = alembic_config(settings)
    try:
        with db_errors(target, settings.connect_timeout):
            command.stamp(
                cfg, "base" if wanted is None else wanted, purge=not known(scripts, before)
            )
    except CommandError as exc:
        raise MoviectlError(f"stamp failed: {exc}") from None
    return StampResult(
        target.database,
        target.url(),
        before,
        current_revision(settings),
        round(time.monotonic() - started, 3),
    )
