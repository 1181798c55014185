"""`moviectl migrate status`: the database's revision beside the scripts' head.

Reading one row must not cost Alembic's and SQLAlchemy's imports (about a second), so
the row is read with psycopg as Alembic's ``MigrationContext.get_current_revision``
reads it, and the scripts with ``chain.py``. Only when the scripts are not one straight
line, or the database names a revision that is not exactly one of theirs, does this ask
Alembic (``runner.py``): the same answers, the same errors, in every case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from moviectl.core.migrations.chain import ScriptInfo, linear_chain
from moviectl.core.migrations.scripts import Revision, versions_location
from moviectl.infra.engine import connect, db_errors
from moviectl.infra.errors import MoviectlError

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.settings import Settings


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


# the table Alembic's has_table finds: the first visible on search_path (SQLAlchemy's query)
_VERSION_TABLE = """
SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relname = 'alembic_version' AND c.relkind = ANY (ARRAY['r', 'p', 'f', 'v', 'm'])
   AND pg_catalog.pg_table_is_visible(c.oid) AND n.nspname <> 'pg_catalog'"""


def read_current(settings: Settings, target: DbTarget) -> str | None:
    """The database's revision, None before the first migration (no table, or no row)."""
    with (
        connect(target, connect_timeout=settings.connect_timeout) as conn,
        db_errors(target, settings.connect_timeout),
    ):
        if conn.execute(_VERSION_TABLE).fetchone() is None:
            return None
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    if len(rows) > 1:
        raise MoviectlError(
            f"database {target.database} records {len(rows)} revisions in alembic_version "
            f"({', '.join(sorted(str(r[0]) for r in rows))}): moviectl's history is one line",
            hint="merge the branches with a migration, or fix alembic_version by hand",
        )
    return str(rows[0][0]) if rows else None


def _pending(chain: list[ScriptInfo], current: str | None, head: str) -> list[Revision]:
    """The scripts after ``current`` up to head, oldest first (as ``runner._between``)."""
    ids = [s.revision for s in chain]
    start = 0 if current is None else ids.index(current) + 1
    return [
        Revision(
            revision=s.revision,
            down_revision=s.down_revision,
            message=s.doc.splitlines()[0] if s.doc else "",
            is_head=s.revision == head,
        )
        for s in chain[start:]
    ]


def status(settings: Settings, database: str | None = None) -> MigrationStatus:
    target = settings.target(database)
    chain = linear_chain(versions_location())
    if chain is None:
        return _status_by_alembic(settings, target, database)
    head = chain[-1].revision if chain else None
    current = read_current(settings, target)
    if current is not None and current not in {s.revision for s in chain}:
        # Alembic also resolves a prefix of an id: let it say what it makes of this one
        return _status_by_alembic(settings, target, database, current=current)
    pending = _pending(chain, current, head) if head is not None and current != head else []
    return MigrationStatus(target.database, target.url(), current, head, pending)


_UNSET = object()


def _status_by_alembic(
    settings: Settings, target: DbTarget, database: str | None, current: object = _UNSET
) -> MigrationStatus:
    from moviectl.core.migrations import runner
    from moviectl.core.migrations.scripts import script_directory

    scripts = script_directory()
    head = scripts.get_current_head()  # a broken history fails here, before connecting
    cur = read_current(settings, target) if current is _UNSET else current
    assert cur is None or isinstance(cur, str)
    if not runner.known(scripts, cur):
        raise runner.unknown_revision(target.database, str(cur))
    pending = runner._between(scripts, head, cur) if cur != head else []
    return MigrationStatus(target.database, target.url(), cur, head, pending)
