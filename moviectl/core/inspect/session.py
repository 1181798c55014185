"""The one connection an inspect command runs on: bounded, read-only, and aware of what
the role may see.

Every statement is bounded by ``statement_timeout`` and ``lock_timeout`` (set first thing),
and the size functions are skipped for a relation someone holds or awaits an ACCESS
EXCLUSIVE lock on (``safe_size``), so a report never queues behind the locks it reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import APP_NAME
from moviectl.infra.engine import connect, db_errors

if TYPE_CHECKING:
    import psycopg

    from moviectl.infra.settings import Settings

INSPECT_APP = f"{APP_NAME} inspect"
STATEMENT_TIMEOUT_MS = 5000
LOCK_TIMEOUT_MS = 500


@dataclass
class Inspector:
    """A connection with what every query needs to know about the server and the role."""

    conn: psycopg.Connection[Any]
    major: int
    role: str
    reads_all_stats: bool  # superuser, or a member of pg_read_all_stats

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def value(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    @property
    def grant_hint(self) -> str:
        return f"GRANT pg_read_all_stats TO {self.role}"


@contextmanager
def inspecting(settings: Settings, timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Iterator[Inspector]:
    """An ``Inspector`` on the app database; driver errors become ``MoviectlError``s."""
    from moviectl.infra.server_facts import server_major

    target = settings.target()
    with db_errors(target, settings.connect_timeout):
        conn = connect(
            target, connect_timeout=settings.connect_timeout, application_name=INSPECT_APP
        )
        try:
            # SET cannot block; from here on nothing waits longer than these
            conn.execute(f"SET statement_timeout = {int(timeout_ms)}")
            conn.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute(
                "SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
                " OR pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
            ).fetchone()
            assert row is not None
            yield Inspector(conn, server_major(conn), str(row[0]), bool(row[1]))
        finally:
            conn.close()


# a relation someone holds or awaits ACCESS EXCLUSIVE on: its size functions would queue
# behind that lock, so its size is read from the catalog (as of its last VACUUM/ANALYZE)
LOCKED = (
    "(SELECT l.relation FROM pg_locks l WHERE l.locktype = 'relation' "
    "AND l.mode = 'AccessExclusiveLock' AND l.database = "
    "(SELECT oid FROM pg_database WHERE datname = current_database()))"
)


def safe_size(oid: str, fn: str = "pg_relation_size") -> str:
    """SQL for the size of relation ``oid`` by ``fn`` that never waits for a lock: with
    ``pg_total_relation_size`` or ``pg_indexes_size`` (which open the indexes too) a locked
    index counts too."""
    pages = f"(SELECT relpages::bigint FROM pg_class WHERE oid = {oid})"
    locked = f"{oid} IN {LOCKED}"
    indexes = f"oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = {oid})"
    if fn == "pg_total_relation_size":
        pages = f"(SELECT sum(relpages)::bigint FROM pg_class WHERE oid = {oid} OR {indexes})"
    elif fn == "pg_indexes_size":  # opens the table to list its indexes, then each index
        pages = f"(SELECT coalesce(sum(relpages), 0)::bigint FROM pg_class WHERE {indexes})"
    if fn in ("pg_total_relation_size", "pg_indexes_size"):
        locked += (
            f" OR EXISTS (SELECT 1 FROM pg_index WHERE indrelid = {oid} AND indexrelid IN {LOCKED})"
        )
    return (
        f"(CASE WHEN {locked} THEN {pages} * current_setting('block_size')::bigint "
        f"ELSE {fn}({oid}) END)"
    )


def hidden_note(inspector: Inspector, rows: list[dict[str, Any]], key: str = "query") -> list[str]:
    """Replace ``<insufficient privilege>`` in ``rows[*][key]`` by a word saying so, and a
    note naming the grant that reveals it (an empty list when nothing was hidden)."""
    from moviectl.core.inspect.model import HIDDEN

    hidden = 0  # the same note for every column hidden: one per role's sessions is enough
    for row in rows:
        if row.get(key) == HIDDEN:
            row[key] = "(hidden)"
            hidden += 1
    if not hidden:
        return []
    return [
        f"other roles' queries are hidden from {inspector.role}: "
        f"`{inspector.grant_hint}` reveals them"
    ]
