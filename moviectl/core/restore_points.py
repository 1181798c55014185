"""Named restore points: `moviectl pitr mark`, the one `migrate` makes before a run, and
``marks.json`` (name → LSN, in ``MOVIE_BACKUP_DIR/pitr``) that `restore --to-name` reads.

Apart from ``core/pitr`` on purpose: `migrate` imports this, and ``pitr`` reaches the
backups package (its object-storage repository) which builds on migrations; only the
infrastructure is below this module (``make_private_dir`` too, which PITR uses).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from moviectl.infra.errors import MoviectlError, UsageError
from moviectl.infra.files import write_json_atomic
from moviectl.infra.settings import Settings

MARKS = "marks.json"


@dataclass
class Mark:
    name: str
    lsn: str
    time: str
    timeline: int = 1


def read_marks(root: Path) -> list[Mark]:
    try:
        return [Mark(**m) for m in json.loads((root / MARKS).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def add_mark(root: Path, mark: Mark) -> None:
    make_private_dir(root)
    marks = [asdict(m) for m in read_marks(root) if m.name != mark.name] + [asdict(mark)]
    write_json_atomic(root / MARKS, marks)


def make_private_dir(path: Path) -> None:
    """``path`` and its missing parents, each 0700."""
    for d in reversed([p for p in [path, *path.parents] if not p.exists()]):
        d.mkdir(mode=0o700, exist_ok=True)


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
    add_mark(Path(settings.backup_dir) / "pitr", m)
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
