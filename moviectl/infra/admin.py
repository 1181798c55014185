"""Server-level admin SQL: create, clone, comment, list and drop databases.

moviectl marks every database it creates with ``COMMENT ON DATABASE`` (``moviectl:``
followed by JSON); ``read_mark`` is how every safety rail recognises them. All
functions take an open autocommit psycopg connection to a maintenance database.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import LockBusy, PermissionDenied
from moviectl.infra.held_signals import held
from moviectl.infra.waiting import poll_until

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

MARK = "moviectl:"
TEST_PREFIX = "movies_test_"  # throwaway test databases (core/testdb.py)
TEMPLATE_PREFIX = "movies_tpl_"  # their migrated templates
SYSTEM_DATABASES = frozenset({"template0", "template1", "postgres"})


def admin_target(settings: Settings) -> DbTarget:
    """The server test databases live on: MOVIE_DATABASE_URL_TEST, else the app's server
    (its direct URL: never through a pooler)."""
    test = settings.test_target()
    return (test or settings.session_target()).with_database("postgres")


def admin_source(settings: Settings) -> str:
    """The variable that names ``admin_target``, for messages."""
    if settings.database_url_test is not None:
        return "MOVIE_DATABASE_URL_TEST"
    return "MOVIE_DATABASE_DIRECT_URL" if settings.database_direct_url else "MOVIE_DATABASE_URL"


def make_mark(kind: str, **fields: Any) -> str:
    """The comment moviectl puts on a database it created (``kind``: test, template, ...)."""
    return MARK + json.dumps({"kind": kind, **fields}, sort_keys=True, default=str)


def read_mark(comment: str | None) -> dict[str, Any] | None:
    """The fields of moviectl's mark, or None for a database moviectl did not mark."""
    if not comment or not comment.startswith(MARK):
        return None
    try:
        data = json.loads(comment[len(MARK) :])
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def ident(name: str) -> Any:
    from psycopg import sql

    return sql.Identifier(name)


def comment_database(conn: Any, name: str, text: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident(name), sql.Literal(text)))


def database_comment(conn: Any, name: str) -> tuple[bool, str | None]:
    """(exists, comment) of database ``name`` (the comment holds moviectl's mark)."""
    row = conn.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return (row is not None, row[0] if row else None)


def databases_named_like(conn: Any, prefix: str, *, sizes: bool = False) -> list[dict[str, Any]]:
    """Databases whose name starts with ``prefix``: name, mark and (``sizes``) size.

    Sizes only when asked: ``pg_database_size`` reads every file of every database listed,
    and fails on a database the role may not CONNECT to (a backup role on a server with one
    locked database could not back up at all: the cleanup of killed runs listed sizes).
    """
    size = "NULL::bigint"
    if sizes:  # none for a database the role may not CONNECT to (it would fail the query)
        size = "CASE WHEN has_database_privilege(oid, 'CONNECT') THEN pg_database_size(oid) END"
    rows = conn.execute(
        f"""
        SELECT datname, shobj_description(oid, 'pg_database'), {size}
        FROM pg_database WHERE datname LIKE %s ORDER BY datname
        """,
        (prefix.replace("_", r"\_") + "%",),
    ).fetchall()
    return [{"name": r[0], "mark": read_mark(r[1]), "size": r[2]} for r in rows]


def clone_strategy(conn: Any) -> str:
    """FILE_COPY where checkpoints are cheap (fsync off: test clusters), else WAL_LOG.

    With FILE_COPY on PostgreSQL 18+, the session also asks for ``file_copy_method =
    clone``: the kernel copies (copy_file_range; a reflink on XFS or Btrfs), 0.8x of the
    server's own read/write loop for a 182 MB template on ext4. A build or file system
    that cannot is left at ``copy`` (here, or on the first clone that fails: ``_cloned``)."""
    if conn.info.server_version < 150000:
        return ""
    fsync = conn.execute("SELECT current_setting('fsync')").fetchone()[0]
    if fsync != "off":
        return ""
    if conn.info.server_version >= 180000:
        from psycopg import Error

        with contextlib.suppress(Error):  # not offered by this build: the plain copy
            conn.execute("SET file_copy_method = clone")
    return " STRATEGY FILE_COPY"


def _cloned(conn: Any, stmt: Any) -> None:
    """``stmt`` (a CREATE DATABASE); when the kernel could not clone the files (an error
    PostgreSQL reports as XX000), once more with the server's own copy."""
    from psycopg import errors

    try:
        conn.execute(stmt)
    except errors.InternalError_:
        if conn.execute("SELECT current_setting('file_copy_method', true)").fetchone()[0] != (
            "clone"
        ):
            raise
        conn.execute("SET file_copy_method = copy")  # for the rest of this session
        conn.execute(stmt)


def create_database(
    conn: Any,
    target: DbTarget,
    name: str,
    template: str | None = None,
    strategy: str | None = None,
    *,
    mark: str | None = None,
) -> None:
    """CREATE DATABASE (a clone of ``template`` when given); no CREATEDB is a clear error.

    ``strategy``: ``clone_strategy(conn)``'s answer, when the caller has it already.
    ``mark``: its comment (moviectl's ownership mark), set with SIGINT and SIGTERM held
    (``held_signals``): the database is made and marked, or neither. A signal between the two
    statements would leave an unmarked database that no moviectl command drops.
    """
    from psycopg import errors, sql

    stmt = sql.SQL("CREATE DATABASE {}").format(ident(name))
    if template:
        how = clone_strategy(conn) if strategy is None else strategy
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}" + how).format(ident(name), ident(template))
    with held():
        try:
            _cloned(conn, stmt)
        except errors.InsufficientPrivilege:
            raise PermissionDenied(
                f"user {target.user!r} may not create databases on {target.host}:{target.port}",
                hint=f'as a superuser: ALTER ROLE "{target.user}" CREATEDB',
            ) from None
        if mark:
            comment_database(conn, name, mark)


def clone_template(
    conn: Any,
    target: DbTarget,
    name: str,
    template: str,
    strategy: str | None = None,
    *,
    mark: str | None = None,
) -> None:
    """``create_database`` cloning moviectl's ready ``template``, ending stale sessions on it.

    A ready template allows no connection, so a session still on it predates that: most
    often a pooler's idle server connection (PgBouncer keeps one for server_idle_timeout,
    600 s, after a client reached the template through it; older moviectl built templates
    through the pooler), and every clone fails with ObjectInUse, direct ones included.
    Only a template carrying moviectl's ready mark and ``datallowconn = false`` is freed."""
    from psycopg import errors

    try:
        create_database(conn, target, name, template, strategy, mark=mark)
        return
    except errors.ObjectInUse:
        if not _ready_template(conn, template):
            raise
    _end_sessions_on(conn, template)
    try:
        create_database(conn, target, name, template, strategy, mark=mark)
    except errors.ObjectInUse:
        raise LockBusy(
            f"template {template} at {target.host}:{target.port} still has sessions on it "
            "that this role may not end (a pooler's idle connections?)",
            hint=f"in PgBouncer's console: KILL {template}; or, as a superuser: SELECT "
            f"pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{template}'",
        ) from None


def _ready_template(conn: Any, name: str) -> bool:
    row = conn.execute(
        "SELECT datallowconn, shobj_description(oid, 'pg_database') FROM pg_database "
        "WHERE datname = %s",
        (name,),
    ).fetchone()
    mark = read_mark(row[1]) if row else None
    return bool(row and not row[0] and mark and mark.get("kind") == "template")


def _end_sessions_on(conn: Any, database: str, wait: float = 5.0) -> None:
    """Terminate every session on ``database`` this role may end, and wait (bounded) for them."""
    from psycopg import errors

    pids = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    for (pid,) in pids:
        with contextlib.suppress(errors.InsufficientPrivilege):  # another role's: stays
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    count = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
    poll_until(lambda: conn.execute(count, (database,)).fetchone()[0] == 0, wait, 0.05)


def advisory_lock(conn: Any, key: int, name: str | None, wait: float) -> bool:
    """Take the session advisory lock ``key`` (with ``hashtext(name)`` when given) on
    ``conn``; False when another session still holds it after ``wait`` seconds.

    The server does the waiting (a blocking lock under ``lock_timeout``), not a poll;
    ``lock_timeout = 0`` would mean forever, so no wait asks once.
    """
    from psycopg import errors

    args, params = ("%s", (key,)) if name is None else ("%s, hashtext(%s)", (key, name))
    if wait <= 0:
        return bool(conn.execute(f"SELECT pg_try_advisory_lock({args})", params).fetchone()[0])
    conn.execute(f"SET lock_timeout = {max(1, int(wait * 1000))}")  # an int
    try:
        conn.execute(f"SELECT pg_advisory_lock({args})", params)
        return True
    except errors.LockNotAvailable:
        return False
    finally:
        conn.execute("RESET lock_timeout")


def may_drop(conn: Any, name: str) -> bool:
    """May ``conn``'s role drop database ``name``? (a superuser, or it has its owner's
    privileges: what DROP DATABASE checks). False for a database that is gone."""
    row = conn.execute(
        "SELECT r.rolsuper OR pg_has_role(current_user, d.datdba, 'USAGE') "
        "FROM pg_database d, pg_roles r WHERE d.datname = %s AND r.rolname = current_user",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def drop_database_force(conn: Any, name: str) -> None:
    """Drop a database, terminating its sessions first (``WITH (FORCE)`` on PG13+)."""
    from psycopg import sql

    row = conn.execute(
        "SELECT datistemplate FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row and row[0]:
        conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(ident(name)))
    if conn.info.server_version >= 130000:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(name)))
        return
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
    )
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident(name)))


def make_template(conn: Any, name: str) -> None:
    """Turn database ``name`` into a template nobody can connect to."""
    from psycopg import sql

    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
            ident(name)
        )
    )


def protected_reason(conn: Any, name: str) -> str | None:
    """Why database ``name`` must never be restored into or replaced; None if it may be.

    System databases, templates, databases that allow no connections, moviectl's own
    test templates, and the database ``conn`` is connected through are protected.
    """
    if name in SYSTEM_DATABASES:
        return f"{name} is a system database"
    if name.startswith(TEMPLATE_PREFIX):
        return f"{name} is one of moviectl's test-database templates"
    if name == conn.info.dbname:
        return f"{name} is the database this command is connected through"
    row = conn.execute(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    if row and row[0]:
        return f"{name} is a template database (datistemplate)"
    if row and not row[1]:
        return f"{name} allows no connections (datallowconn = false)"
    return None
