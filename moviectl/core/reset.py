"""`db reset`: drop the app database, create it again, migrate it to head, seed it.

Invariants: touches the app database alone (never another database on the server), and
never a protected one (``infra/protect.py``: refused before anything is dropped unless
overridden). An overridden reset keeps the mark: ``DROP DATABASE`` takes the database's
settings along, so the recreated one is marked as the dropped one was, right after its
CREATE (a kill between the two leaves an empty, unmarked database). The drop terminates
the database's sessions (``WITH (FORCE)``). A reset killed half-way leaves at worst a
missing or empty database, which the next ``db reset`` (or ``moviectl up``) completes; two
resets at once: the second's CREATE fails or its drop ends the first's migration, and
running it again converges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from moviectl.core.migrations.runner import MigrateResult, upgrade
from moviectl.core.seed.load import SeedResult, seed
from moviectl.infra.admin import SYSTEM_DATABASES, create_database, drop_database_force
from moviectl.infra.engine import connect
from moviectl.infra.errors import Refused
from moviectl.infra.protect import guard, marks, set_mark
from moviectl.infra.settings import Settings

SAMPLE_DEFAULT = 3  # as `moviectl up` seeds an empty database


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
    guard(settings, "reset (drop and recreate) it", target=target, override=override)
    admin = target.with_database("postgres")
    with connect(admin, connect_timeout=settings.connect_timeout) as conn:
        existed = (
            conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)
            ).fetchone()
            is not None
        )
        environment = marks(conn, target.database).get(target.database)
        drop_database_force(conn, target.database)
        create_database(conn, admin, target.database)
        if environment is not None:
            set_mark(conn, target.database, environment)
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
