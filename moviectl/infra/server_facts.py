"""Facts about a database, read over an open psycopg connection.

The server's version, its major, the Alembic revision and the row counts used to be read
in several places, each its own way (``SHOW server_version``, ``server_version_num``,
``pg_tables`` or ``to_regclass`` to find ``alembic_version``). These are the one way.
The version needs no query: the server reports it when the connection starts
(``ParameterStatus``), and libpq keeps it.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class DatabaseFacts(NamedTuple):
    """What a backup's manifest records and a restore compares."""

    server_version: str
    server_major: int
    alembic_revision: str | None
    row_counts: dict[str, int]


def server_version(conn: Any) -> str:
    """The server's version as it names itself (``18.0``, ``16.4 (Debian 16.4-1)``)."""
    reported = conn.info.parameter_status("server_version")
    if reported is not None:
        return str(reported)
    # a server (or pooler) that did not report it: ask
    return str(conn.execute("SHOW server_version").fetchone()[0])


def server_major(conn: Any) -> int:
    """The server's major version (``18``): libpq's number, no query."""
    return int(conn.info.server_version) // 10000


def alembic_revision(conn: Any) -> str | None:
    """The database's Alembic revision; None without an ``alembic_version`` table (base)
    or with an empty one."""
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(found[0]) if found else None


def row_counts(conn: Any, schema: str = "public") -> dict[str, int]:
    """The exact row count of every table in ``schema`` (a full scan of each: backups and
    restores compare them; nothing on a hot path)."""
    from psycopg import sql

    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (schema,)
        )
    ]
    query = sql.SQL("SELECT count(*) FROM {}")
    return {
        t: int(conn.execute(query.format(sql.Identifier(schema, t))).fetchone()[0]) for t in tables
    }


def database_facts(conn: Any) -> DatabaseFacts:
    """Version, major, revision and row counts, all read on ``conn`` (one snapshot when
    ``conn`` is in a repeatable-read transaction)."""
    return DatabaseFacts(
        server_version(conn), server_major(conn), alembic_revision(conn), row_counts(conn)
    )
