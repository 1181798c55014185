"""After the upgrade: the new cluster holds what the safety backup's manifest says."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import CheckFailed, MoviectlError

if TYPE_CHECKING:
    from moviectl.core.backups.manifest import Manifest
    from moviectl.core.upgrade.model import Timer
    from moviectl.infra.settings import Settings


def safety_backup(settings: Settings, timer: Timer, record: Callable[[str], None]) -> Any:
    """The upgrade's safety backup, verified by its restore drill before anything changes;
    ``record`` gets its path the moment it exists (the upgrade's state names it)."""
    from moviectl.core.backups.dump import backup
    from moviectl.core.backups.verify import verify

    with timer.phase("backup", "the safety backup, then its restore drill"):
        made = backup(settings)
        record(made.path)
        drill = verify(settings, Path(made.path))
    if not drill.ok:
        raise CheckFailed(
            f"the safety backup {made.path} failed its restore drill: "
            + "; ".join(drill.differences[:3]),
            hint="nothing was changed; see `moviectl backup verify` of that file",
        )
    timer.progress(f"safety backup {made.path}: verified by the restore drill")
    return made


def load_in_background() -> threading.Thread:
    """What the verification runs on, loaded on a thread while pg_upgrade works in its own
    process: SQLAlchemy, Alembic's autogenerate and the service's models take seconds to
    import in a fresh moviectl, the most of `migrate check`'s time after an upgrade."""

    def load() -> None:
        with contextlib.suppress(Exception):  # the verification imports them again anyway
            import alembic.autogenerate  # noqa: F401
            import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401

            import moviectl.core.backups.dump
            import moviectl.core.backups.restore
            import moviectl.core.health.checks
            import moviectl.core.migrations.drift  # noqa: F401
            from moviectl.core.migrations.project import target_metadata

            target_metadata()

    thread = threading.Thread(target=load, name="verify-imports", daemon=True)
    thread.start()
    return thread


def verify_after(settings: Settings, man: Manifest) -> tuple[list[str], list[str]]:
    """(what held, what failed): Alembic revision and row counts per table against the
    manifest, `migrate check` (models against the live schema), the health checks."""
    from concurrent.futures import ThreadPoolExecutor

    from moviectl.core.backups.dump import snapshot
    from moviectl.core.backups.restore import compare
    from moviectl.core.health.checks import run_health
    from moviectl.core.migrations.drift import check

    held: list[str] = []
    failed: list[str] = []
    # each on its own connection at once: they wait on the server more than on Python
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="verify") as pool:
        drifted = pool.submit(check, settings)
        health = pool.submit(run_health, settings)
        _, _, rev, counts = snapshot(settings, settings.target())
    if rev == man.alembic_revision:
        held.append(f"Alembic revision {rev}, as before")
    else:
        failed.append(f"Alembic revision {rev}, the safety backup has {man.alembic_revision}")
    diffs = [d for d in compare(man, rev, counts) if "rows" in d]
    if diffs:
        failed += diffs
    else:
        rows = sum(man.row_counts.values())
        held.append(f"row counts of {len(man.row_counts)} tables ({rows} rows) as in the manifest")
    try:
        drift = [d for d in drifted.result().differences if not _same_but_casts(d)]
        if not drift:
            held.append("migrate check: the schema matches the models")
        else:
            failed.append("migrate check: " + "; ".join(drift[:3]))
    except MoviectlError as exc:
        failed.append(f"migrate check: {exc.message}")
    report = health.result()
    if report.ok:
        held.append("health: every check passed")
    else:
        failed.append(f"health: {report.failing}")
    return held, failed


_CHECK = re.compile(r"CHECK constraint \S+ differs: the database has (.*), the models (.*)$")


def _same_but_casts(difference: str) -> bool:
    """A CHECK an older major made deparses with its casts elsewhere in the new one (16's
    ``IN`` over varchar reads ``= ANY ((ARRAY[...])::text[])`` in 18, the models'
    ``= ANY (ARRAY[(...)::text])``): the same constraint, not drift."""
    m = _CHECK.match(difference)
    if m is None:
        return False
    db, models = (
        re.sub(r"[()\s]|::(character varying|[a-z_]+)(\[\])?", "", s.lower()) for s in m.groups()
    )
    return db == models
