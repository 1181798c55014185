"""The one engine factory: every database connection moviectl makes starts here.

``make_engine(settings)`` builds the SQLAlchemy engine (pool, pre-ping, timeouts,
``application_name``); ``connect(target)`` opens a plain psycopg connection for
admin work, health checks, backups and COPY: the paths that need no ORM import no
SQLAlchemy (this module imports it only inside ``make_engine``/``session_scope``, and
recognises its errors without importing it). Expected driver errors become
``MoviectlError``s naming host, port and database, never the password, by the one table
in ``pgerrors``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

from moviectl.infra import backend_exit
from moviectl.infra.conninfo import APP_NAME, DbTarget
from moviectl.infra.errors import MoviectlError
from moviectl.infra.pgerrors import classify, translate
from moviectl.infra.pooler import (
    database_identity,
    direct_elsewhere,
    session_refused,
    through_pooler,
)

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy.engine import URL, Engine
    from sqlmodel import Session

    from moviectl.infra.settings import Settings


def dialect_url() -> URL:
    """SQLAlchemy's URL names only the dialect: the connection itself is libpq's keywords
    (``DbTarget.libpq_params``), so every libpq form works (sockets, several hosts, TLS)."""
    from sqlalchemy.engine import URL

    return URL.create("postgresql+psycopg")


def make_engine(
    settings: Settings,
    database: str | None = None,
    *,
    target: DbTarget | None = None,
    pooled: bool = True,
    application_name: str = APP_NAME,
) -> Engine:
    """Build the engine for ``database`` (default: the app database) from ``settings``.

    Through a pooler (declared: a direct URL besides this one; or seen at connect) the
    connections prepare no statement: the next transaction may run on another backend."""
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    tgt = target or settings.target()
    if database:
        tgt = tgt.with_database(database)
    pool_kw: dict[str, Any] = (
        {
            "pool_size": settings.pool_size,
            "max_overflow": settings.max_overflow,
            "pool_timeout": settings.pool_timeout,
        }
        if pooled
        else {"poolclass": NullPool}
    )
    connect_args = tgt.libpq_params(settings.connect_timeout)
    connect_args["application_name"] = application_name
    declared = settings.database_direct_url is not None and tgt == settings.target(database)
    declared = declared and settings.session_target(database) != tgt
    if declared:
        connect_args["prepare_threshold"] = None
    engine = create_engine(
        dialect_url(),
        echo=settings.database_echo,
        pool_pre_ping=True,
        connect_args=connect_args,
        **pool_kw,
    )

    @event.listens_for(engine, "do_connect")
    def _watched(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        backend_exit.settle()  # as connect(): its logins and closes are the same slots
        return _connection_class().connect(*cargs, **cparams)

    if not declared:

        @event.listens_for(engine, "connect")
        def _no_prepare_through_a_pooler(dbapi_connection: Any, _record: Any) -> None:
            if through_pooler(dbapi_connection):
                dbapi_connection.prepare_threshold = None

    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    from sqlmodel import Session

    with Session(engine) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def connect(
    target: DbTarget,
    *,
    connect_timeout: int = 5,
    autocommit: bool = True,
    application_name: str = APP_NAME,
    session: str | None = None,
    source: str = "MOVIE_DATABASE_URL",
) -> psycopg.Connection[Any]:
    """A plain psycopg connection (admin statements, probes); errors are translated.

    It prepares no statement (it runs a few, maybe through a pooler). ``session``: what
    needs this connection to be a session of its own (a session lock, a snapshot); through
    a pooler that is refused (exit 2), naming ``source``, the variable to fix."""
    import psycopg

    params = target.libpq_params(connect_timeout)
    params["application_name"] = application_name
    backend_exit.settle()  # the slot of the connection closed before is free again
    try:
        conn = _connection_class().connect(autocommit=autocommit, prepare_threshold=None, **params)
    except psycopg.Error as exc:
        raise translate_error(exc, target, connect_timeout) from None
    if session is not None:
        try:
            with db_errors(target, connect_timeout):
                pooled = through_pooler(conn)
            if pooled:
                raise session_refused(target, session, source)
        except BaseException:
            conn.close()
            raise
    return conn


@cache
def _connection_class() -> type[psycopg.Connection[Any]]:
    """psycopg's connection, whose clean close leaves its socket to ``backend_exit``."""
    import psycopg
    from psycopg.pq import TransactionStatus

    class Connection(psycopg.Connection[Any]):
        def close(self) -> None:
            if not self.closed and self.info.transaction_status == TransactionStatus.IDLE:
                backend_exit.watch(self.fileno())  # not one in doubt: a stalled server's
            super().close()

    return Connection


def require_session(settings: Settings, what: str, database: str | None = None) -> Settings:
    """``settings`` pointed at the direct session (MOVIE_DATABASE_DIRECT_URL, else the
    main URL) once a connection there proved it is no pooler: everything ``what`` does
    (session locks, pg_dump's snapshot, CREATE DATABASE) goes there."""
    direct, conn = open_session(settings, what, database)
    conn.close()
    return direct


def open_session(
    settings: Settings, what: str, database: str | None = None
) -> tuple[Settings, psycopg.Connection[Any]]:
    """``require_session``, and the connection that proved it, open (autocommit) for the
    caller to use (and close): one login instead of two (a backup's snapshot)."""
    direct = settings.session_settings()
    source = "MOVIE_DATABASE_DIRECT_URL" if settings.database_direct_url else "MOVIE_DATABASE_URL"
    target = direct.target(database)
    timeout = settings.connect_timeout
    conn = connect(target, connect_timeout=timeout, session=what, source=source)
    try:
        if settings.database_direct_url is not None and database is None:
            with db_errors(target, timeout):
                mine = database_identity(conn)
            _same_database(mine, settings.target(), min(timeout, 3))
    except BaseException:
        conn.close()
        raise
    return direct, conn


def _same_database(mine: tuple[str, int | None], pooled: DbTarget, timeout: int) -> None:
    """A direct URL that leads elsewhere than MOVIE_DATABASE_URL (a typo, staging's URL)
    would migrate or seed the wrong database: refuse it. Names alone cannot tell (a pooler
    may alias a database), so ask both sides; a pooler that does not answer does not stop
    a command that needs only the direct session."""
    try:
        with connect(pooled, connect_timeout=timeout) as conn, db_errors(pooled, timeout):
            seen = database_identity(conn)
    except MoviectlError:
        return
    if seen != mine:
        raise direct_elsewhere(pooled, mine[0], seen[0])


@contextmanager
def db_errors(target: DbTarget, connect_timeout: int | None = None) -> Iterator[None]:
    """Turn the expected driver errors raised inside the block (psycopg's, and SQLAlchemy's
    wrappers of them) into ``MoviectlError``s by the one table, ``pgerrors``; anything else
    (a bug) goes on untouched, with its traceback, to the one handler."""
    try:
        yield
    except Exception as exc:
        error = classify(exc, target, connect_timeout)
        if error is None:
            raise
        raise error from None


def translate_error(
    exc: BaseException, target: DbTarget, connect_timeout: int | None = None
) -> MoviectlError:
    """A driver error (or a child tool's complaint) as one ``MoviectlError``, never with
    the password: ``pgerrors.translate``."""
    return translate(exc, target, connect_timeout)
