"""Connection poolers (PgBouncer, and its peers that pool by transaction), seen from a client.

A pooler in transaction mode hands each transaction to whichever server connection is
free: a session advisory lock, a session setting or a server-side prepared statement
lands on a backend the next transaction may not see. So moviectl keeps what needs a
session on the direct URL (``Settings.session_target``) and never prepares statements
through a pooler (``engine.py``).

How a pooler shows: the backend key a server sends at login (BackendKeyData) carries the
backend's pid; PgBouncer (1.18 tested, and PgCat, Odyssey, Supavisor alike) sends its own
random key instead, so it differs from ``pg_backend_pid()``. A direct connection always
matches, whatever NAT or port mapping lies between (comparing ports would not).
"""

from __future__ import annotations

from typing import Any

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import ConfigError


def through_pooler(conn: Any) -> bool:
    """Does this psycopg connection reach its server through a pooler? (One query; a
    connection outside autocommit is left as it was: its transaction rolled back.)"""
    idle = conn.autocommit or conn.info.transaction_status == 0  # psycopg IDLE
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    if idle and not conn.autocommit:
        conn.rollback()
    return bool(conn.info.backend_pid != pid)


def session_refused(target: DbTarget, what: str, source: str) -> ConfigError:
    """The one line of a session command pointed at a pooler, with the way out."""
    if source == "MOVIE_DATABASE_DIRECT_URL":
        way = "point MOVIE_DATABASE_DIRECT_URL at the PostgreSQL server itself"
    elif source == "MOVIE_DATABASE_URL_TEST":
        way = "point MOVIE_DATABASE_URL_TEST at the PostgreSQL server itself"
    else:
        way = "set MOVIE_DATABASE_DIRECT_URL to the PostgreSQL server behind it"
    return ConfigError(
        f"{target.where} is a connection pooler (PgBouncer or alike) and {what} needs a "
        f"session of its own: {way}",
        hint="see the README, 'Behind a pooler'",
        pooler=target.where,
    )


def database_identity(conn: Any) -> tuple[str, int | None]:
    """The database a connection reached, and its cluster's system identifier (None where
    the role may not read it): equal on both sides when they lead to the same database."""
    import psycopg

    name = conn.execute("SELECT current_database()").fetchone()[0]
    try:
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
    except psycopg.errors.InsufficientPrivilege:  # the name still counts
        if not conn.autocommit:
            conn.rollback()
        return str(name), None
    return str(name), int(row[0])


def direct_elsewhere(pooled: DbTarget, direct_db: str, pooled_db: str) -> ConfigError:
    """MOVIE_DATABASE_DIRECT_URL leads to another database than MOVIE_DATABASE_URL."""
    where = f"database {direct_db}" if direct_db != pooled_db else "another server"
    return ConfigError(
        f"MOVIE_DATABASE_DIRECT_URL leads to {where}, but MOVIE_DATABASE_URL "
        f"({pooled.where}) to database {pooled_db}: refusing to work on the wrong one",
        hint="point MOVIE_DATABASE_DIRECT_URL at the server behind the pooler, same database",
    )
