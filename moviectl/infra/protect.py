"""Protected environments: a mark stored in the database itself, and the guard that reads it.

The mark is a database-level setting, ``ALTER DATABASE … SET moviectl.environment =
'production'`` (``pg_db_role_setting``, a shared catalog: readable from any database on the
server, even the maintenance one that ``db down --volumes`` or ``testdb drop`` use). Why
there, and not a table or ``COMMENT ON DATABASE``:

- it belongs to the *database*, not its data: a production dump restored into a laptop's
  database (``pg_dump`` without ``--create``, what ``moviectl backup`` makes) does not carry
  the mark along, so the copy is not mistaken for production; a table in the schema would
  travel with every dump (Rails' ``ar_internal_metadata`` does, and needs
  ``db:environment:set`` to undo it);
- what keeps the production database itself keeps it: ``restore --force`` into it (objects
  replaced, the database stays), physical backups, replicas, ``pg_dumpall`` and
  ``pg_dump --create`` (which dump database settings);
- the comment is taken: it holds moviectl's test-database ownership mark;
- ``CREATE DATABASE … TEMPLATE`` does not copy it, so a clone is never protected by accident.

Every destructive command calls ``guard`` before it changes anything: a protected database
is refused (exit 5, naming the mark) unless the caller passes an explicit override (the
command's ``--i-know-this-is-production``) or ``MOVIE_ALLOW_PROTECTED`` names the database.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import MoviectlError, Refused, Unreachable, UsageError

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.settings import Settings

SETTING = "moviectl.environment"
OVERRIDE_FLAG = "--i-know-this-is-production"
_ENV_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")

_MARKS = """
SELECT d.datname, cfg
FROM pg_database d
JOIN pg_db_role_setting s ON s.setdatabase = d.oid AND s.setrole = 0
CROSS JOIN LATERAL unnest(s.setconfig) AS cfg
WHERE cfg LIKE 'moviectl.environment=%%'
"""


def marks(conn: Any, database: str | None = None) -> dict[str, str]:
    """``{database: environment}`` of the protected databases on ``conn``'s server."""
    query = _MARKS + (" AND d.datname = %s" if database else "")
    rows = conn.execute(query, (database,) if database else ()).fetchall()
    return {name: cfg.split("=", 1)[1] for name, cfg in rows}


def set_mark(conn: Any, database: str, environment: str | None) -> None:
    """Protect ``database`` as ``environment``, or (None) remove the mark."""
    from psycopg import sql

    name = sql.Identifier(database)
    if environment is None:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET moviectl.environment").format(name))
        return
    if not _ENV_NAME.match(environment):
        raise UsageError(
            f"bad environment name {environment!r}", hint="letters, digits, _ . - (production)"
        )
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET moviectl.environment = {}").format(
            name, sql.Literal(environment)
        )
    )


def overridden(settings: Settings, database: str, override: bool) -> bool:
    return override or settings.allow_protected == database


def refusal(database: str, environment: str, what: str, where: str) -> Refused:
    return Refused(
        f"database {database} on {where} is protected ({SETTING} = {environment!r}): "
        f"refusing to {what}",
        hint=f"if you really mean it: {OVERRIDE_FLAG}, or MOVIE_ALLOW_PROTECTED={database}; "
        f"to lift the mark: moviectl db protect --unprotect",
    )


def guard(
    settings: Settings,
    what: str,
    *,
    target: DbTarget | None = None,
    override: bool = False,
    server_wide: bool = False,
) -> None:
    """Refuse ``what`` when the database (or, ``server_wide``, any database on the server)
    is protected and not overridden.

    A database the guard cannot read fails here, with the connection's own error (exit 3 or
    4), before any prompt: the command needs that connection next anyway, and a prompt
    must not call a database it could not read "not protected". Only ``server_wide``
    (``db down --volumes``: the server may be stopped, its files are what goes) passes a
    server that cannot be reached."""
    from moviectl.infra.engine import connect  # here: the CLI imports this module to start

    t = target or settings.session_target()
    try:
        conn = connect(
            t.with_database("postgres") if server_wide else t,
            connect_timeout=settings.connect_timeout,
        )
    except MoviectlError as first:
        if server_wide:
            return
        if t.database == "postgres":
            raise
        try:  # the database may be gone (db reset): its server answers for it
            conn = connect(t.with_database("postgres"), connect_timeout=settings.connect_timeout)
        except MoviectlError:
            raise first from None
    found = _read_marks(settings, conn, t, server_wide)
    for database, environment in sorted(found.items()):
        if not overridden(settings, database, override):
            raise refusal(database, environment, what, f"{t.host}:{t.port}")


def _read_marks(settings: Settings, conn: Any, t: DbTarget, server_wide: bool) -> dict[str, str]:
    """The marks, read on ``conn``; a session the server ended meanwhile (another `db reset`
    dropping this database WITH (FORCE), the race of two resets at once) asks the server's
    maintenance database instead: the marks are server-wide catalogs, the same there.

    Server-wide, a server that stops answering meanwhile (a second `db down --volumes`
    stopping it) passes, as one that never answered does: its files are what goes next."""
    import psycopg

    from moviectl.infra.engine import connect

    with conn:
        try:
            return marks(conn, None if server_wide else t.database)
        except psycopg.OperationalError:
            if t.database == "postgres" and not server_wide:
                raise
    try:
        with connect(
            t.with_database("postgres"), connect_timeout=settings.connect_timeout
        ) as again:
            return marks(again, None if server_wide else t.database)
    except (MoviectlError, psycopg.OperationalError):
        if server_wide:
            return {}
        raise


UNKNOWN = "?"  # environment_of: the mark could not be read


def environment_of(
    settings: Settings, target: DbTarget | None = None, *, connect_timeout: int | None = None
) -> str | None:
    """The database's protection mark, None when unprotected, ``UNKNOWN`` when neither
    it nor its server's maintenance database answers (for prompts and ``config show``)."""
    import psycopg

    from moviectl.infra.engine import connect

    t = target or settings.session_target()
    wait = connect_timeout or settings.connect_timeout
    for where in (t, t.with_database("postgres")):  # a dropped database: ask its server
        try:
            with connect(where, connect_timeout=wait) as conn:
                return marks(conn, t.database).get(t.database)
        except Unreachable:
            break  # the server itself does not answer: asking it again only waits longer
        except MoviectlError:
            continue
        except psycopg.OperationalError:  # its session ended (the database dropped): ask again
            continue
    return UNKNOWN
