"""Named restore points: `moviectl pitr mark`, and the one `migrate` makes before a run.

Only the infrastructure and the store below it: `migrate` imports this.
"""

from __future__ import annotations

import datetime as dt

from moviectl.core.pitr.store import Mark, store_of
from moviectl.infra.errors import MoviectlError, UsageError
from moviectl.infra.settings import Settings


def mark(settings: Settings, name: str) -> Mark:
    """``pg_create_restore_point(name)``, recorded so `restore --to-name` finds its base."""
    from moviectl.infra.engine import connect

    if not name or len(name) >= 64:
        raise UsageError(f"a restore point name must be 1-63 characters, not {name!r}")
    with connect(settings.target(), connect_timeout=settings.connect_timeout) as conn:
        row = conn.execute(
            "SELECT pg_create_restore_point(%s)::text, now(),"
            " (SELECT timeline_id FROM pg_control_checkpoint())",
            (name,),
        ).fetchone()
    if row is None:  # pragma: no cover - a SELECT without FROM returns its row
        raise UsageError("pg_create_restore_point returned nothing")
    lsn, now, tli = row
    m = Mark(name, lsn, now.astimezone(dt.UTC).isoformat(), int(tli))
    store_of(settings).add_mark(m)
    return m


def mark_before_migration(settings: Settings) -> str | None:
    """`migrate`'s restore point when archiving is on; never in the migration's way."""
    from moviectl.infra.engine import connect

    try:
        with connect(settings.target(), connect_timeout=settings.connect_timeout) as conn:
            row = conn.execute("SELECT current_setting('archive_mode')").fetchone()
        if row is None or row[0] not in ("on", "always"):
            return None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return mark(settings, f"before-migrate-{stamp}").name
    except (MoviectlError, OSError):
        return None
