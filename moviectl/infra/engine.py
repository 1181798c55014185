"""The one engine factory: every database connection moviectl makes starts here.

``make_engine(settings)`` builds the SQLAlchemy engine (pool, pre-ping, timeouts,
``application_name``); ``connect(target)`` opens a plain psycopg connection for
admin work, health checks, backups and COPY: the paths that need no ORM import no
SQLAlchemy (this module imports it only inside ``make_engine``/``session_scope``, and
recognises its errors without importing it). Driver errors become ``MoviectlError``s
naming host, port and database, never the password.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import APP_NAME, DbTarget
from moviectl.infra.errors import (
    AuthFailed,
    ConfigError,
    DatabaseMissing,
    MoviectlError,
    PermissionDenied,
    Unreachable,
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
    """Build the engine for ``database`` (default: the app database) from ``settings``."""
    from sqlalchemy import create_engine
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
    return create_engine(
        dialect_url(),
        echo=settings.database_echo,
        pool_pre_ping=True,
        connect_args=connect_args,
        **pool_kw,
    )


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
) -> psycopg.Connection[Any]:
    """A plain psycopg connection (admin statements, probes); errors are translated."""
    import psycopg

    params = target.libpq_params(connect_timeout)
    params["application_name"] = application_name
    try:
        return psycopg.connect(autocommit=autocommit, **params)
    except psycopg.Error as exc:
        raise translate_error(exc, target, connect_timeout) from None


@contextmanager
def db_errors(target: DbTarget, connect_timeout: int | None = None) -> Iterator[None]:
    """Turn driver errors raised inside the block into ``MoviectlError``s (psycopg's, and
    SQLAlchemy's wrappers of them: recognised without importing SQLAlchemy)."""
    try:
        yield
    except Exception as exc:
        driver = driver_error(exc)
        if driver is None:
            raise
        raise translate_error(driver, target, connect_timeout) from None


def driver_error(exc: BaseException) -> BaseException | None:
    """The database driver's error behind ``exc`` (psycopg's own, or the one SQLAlchemy's
    ``DBAPIError`` wraps), else None. Imports neither: a module not loaded raised nothing."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return exc
    if type(exc).__module__.startswith("sqlalchemy."):
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return exc.orig if isinstance(exc.orig, Exception) else exc
    return None


def translate_error(
    exc: BaseException, target: DbTarget, connect_timeout: int | None = None
) -> MoviectlError:
    """Map a driver error to a one-line ``MoviectlError`` (no password, ever)."""
    text = str(exc).strip()
    low = text.lower()
    sqlstate = getattr(exc, "sqlstate", None)
    where = f"{target.host}:{target.port}"
    db = target.database
    details: dict[str, Any] = {"host": target.host, "port": target.port, "database": db}
    if "does not exist" in low and any(
        f in low for f in ("root certificate", "certificate file", "private key file", "crl")
    ):
        missing = next((ln for ln in text.splitlines() if "does not exist" in ln), text)
        return ConfigError(
            f"a TLS file named in the connection settings is missing ({where}/{db}): "
            f"{_tls_detail(missing)}",
            hint="check sslrootcert / sslcert / sslkey (or PGSSLROOTCERT) in MOVIE_DATABASE_URL",
            **details,
        )
    if "server does not support ssl" in low:
        return Unreachable(
            f"the server at {where} does not offer TLS, and sslmode={target.sslmode} requires it "
            f"(database {db!r})",
            hint="enable ssl on the server, or lower sslmode (never below require for a "
            "remote server)",
            **details,
        )
    if "certificate" in low or ("ssl" in low and ("error" in low or "verify" in low)):
        return Unreachable(
            f"TLS failed with the server at {where} (database {db!r}): {_tls_detail(text)}",
            hint="the server's certificate must be signed by sslrootcert's CA and name the "
            "host you connect to (sslmode=verify-full)",
            **details,
        )
    if "password authentication failed" in low or sqlstate == "28P01":
        return AuthFailed(
            f"password authentication failed for user {target.user!r} at {where}/{db}", **details
        )
    if "no password supplied" in low:
        return AuthFailed(
            f"the server at {where}/{db} wants a password for {target.user!r}, and none is set",
            hint="set MOVIE_DB_PASSWORD (or the password in MOVIE_DATABASE_URL)",
            **details,
        )
    if "too many clients" in low or "connection slots are reserved" in low or sqlstate == "53300":
        return Unreachable(
            f"the server at {where} has no free connection slots (max_connections reached; "
            f"database {db!r})",
            hint="close idle connections (SELECT * FROM pg_stat_activity), or raise "
            "max_connections",
            **details,
        )
    if (
        f'database "{db}" does not exist' in text
        or sqlstate == "3D000"
        or ("database" in low and "does not exist" in low and "role" not in low)
    ):
        return DatabaseMissing(f"database {db!r} does not exist on {where}", **details)
    if "role" in low and "does not exist" in low:
        return AuthFailed(f"role {target.user!r} does not exist on {where}", **details)
    if "no pg_hba.conf entry" in low:
        return AuthFailed(
            f"the server at {where} does not allow {target.user!r} to connect to {db!r}",
            hint="add a pg_hba.conf entry for this client",
            **details,
        )
    if "could not translate host name" in low or "name or service not known" in low:
        return Unreachable(
            f"host name {target.host!r} does not resolve (database {db!r})",
            hint="check MOVIE_DB_HOST / MOVIE_DATABASE_URL",
            **details,
        )
    if "timeout expired" in low or "timed out" in low:
        secs = f" within {connect_timeout}s" if connect_timeout else ""
        return Unreachable(
            f"no answer from PostgreSQL at {where}{secs} (database {db!r})",
            hint="is the host up and the port right? raise MOVIE_CONNECT_TIMEOUT for slow links",
            **details,
        )
    if any(
        s in low
        for s in (
            "connection refused",
            "could not connect",
            "no route to host",
            "server closed the connection unexpectedly",
            "connection reset by peer",
        )
    ):
        return Unreachable(
            f"cannot reach PostgreSQL at {where} (connection refused; database {db!r})",
            **details,
        )
    if "starting up" in low or "shutting down" in low or "in recovery mode" in low:
        return Unreachable(f"the server at {where} is not accepting connections yet", **details)
    if "permission denied" in low or sqlstate == "42501":
        first = text.splitlines()[0]
        return PermissionDenied(f"{first} (user {target.user!r} at {where}/{db})", **details)
    first = text.splitlines()[0] if text else type(exc).__name__
    return MoviectlError(f"{first} (at {where}/{db})", **details)


def _tls_detail(text: str) -> str:
    """libpq's TLS complaint, one line, without the "connection to server at …" preamble."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    return last.split(": ", 1)[1] if last.startswith("connection to server") else last
