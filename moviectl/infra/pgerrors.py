"""Driver errors by SQLSTATE: the one table from PostgreSQL's error codes to moviectl's errors.

``classify(exc, target)`` turns a driver error (psycopg's, or SQLAlchemy's wrapper of one)
into the ``MoviectlError`` of an *expected* condition, with a message that names host,
port and database (``DbTarget.where``) and a hint, never the password; it returns None for
anything else. The rule, per SQLSTATE class:

- expected, a user error: what the operator's environment decides, not moviectl's code.
  08 connection, 28 authorization, 3D000 no such database, 42501 privilege, 25006 read-only
  server, 53 out of resources (53300: no free connection slot), 55P03/55006 lock or object
  held by another session, 40001/40P01 serialization failure or deadlock, 57 operator
  intervention (shutdown, crash, starting up, a cancelled statement), 58/XX the server's
  own I/O failure, corruption or internal error.
- anything else is a bug (exit 10, ``InternalError``, with the ``-v`` hint): 42 other than
  42501 (moviectl's SQL does not fit the schema: undefined table or column, syntax), 22/23
  data and constraints (moviectl validates what it writes; ``seed --from FILE`` turns
  them into a bad input file itself), 25 but 25006 (transaction state), 0A, and
  psycopg's client-side errors without a SQLSTATE (InterfaceError, a misused API). A
  migration script's failure is the project's code: the one handler names the script.

Text is read in one place, ``LIBPQ_TEXT``, for errors without a SQLSTATE (and PgBouncer's
08P01, whose words say which of its complaints it is): libpq
reports every connection-time failure as text (refused, timeout, DNS, TLS, no password,
and the server's own FATALs at login: psycopg has no SQLSTATE for those), and a child
tool's stderr (pg_dump) carries none either. Each text maps to the SQLSTATE the server
would have sent, or to a libpq-only condition, and then through the same table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import (
    AuthFailed,
    ConfigError,
    DatabaseMissing,
    ExitCode,
    InternalError,
    LockBusy,
    MoviectlError,
    OutOfResources,
    PermissionDenied,
    ServerFailed,
    StatementCanceled,
    Unreachable,
)

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired
QUERY_CANCELED = "57014"  # statement_timeout, or a cancel request
PROTOCOL_VIOLATION = "08P01"  # also what PgBouncer sends with each of its own complaints


@dataclass(frozen=True)
class Kind:
    """What one condition becomes. ``message`` and ``hint`` are ``str.format`` templates over
    ``where`` (host:port/database), ``server`` (host:port), ``db``, ``user``, ``detail`` (the
    server's or libpq's own words, one line), ``secs`` and ``sslmode``."""

    error: type[MoviectlError]
    message: str
    hint: str | None = None  # None: the error class's default hint

    @property
    def exit_code(self) -> ExitCode:
        return self.error.exit_code


_SLOTS = "close idle connections (SELECT * FROM pg_stat_activity), or raise max_connections"
_SERVER_LOG = "see the server's log; moviectl did not cause this"
_RETRY = "retry when that session is done; SELECT pid, query FROM pg_stat_activity shows it"

# Keyed by SQLSTATE, by SQLSTATE class (two characters), or by a libpq-only condition
# (lowercase words, from LIBPQ_TEXT). An exact code wins over its class.
KINDS: dict[str, Kind] = {
    # -- connection (08), and what libpq alone reports while connecting
    "08": Kind(Unreachable, "lost the connection to PostgreSQL at {where}: {detail}"),
    "connection": Kind(Unreachable, "cannot connect to PostgreSQL at {where}: {detail}"),
    "lost": Kind(Unreachable, "lost the connection to PostgreSQL at {where}: {detail}"),
    "refused": Kind(Unreachable, "cannot reach PostgreSQL at {where}: {detail}"),
    "timeout": Kind(
        Unreachable,
        "no answer from PostgreSQL at {where}{secs}",
        "is the host up and the port right? raise MOVIE_CONNECT_TIMEOUT for slow links",
    ),
    "dns": Kind(
        Unreachable,
        "host name of {where} does not resolve: {detail}",
        "check MOVIE_DB_HOST / MOVIE_DATABASE_URL",
    ),
    "no-tls": Kind(
        Unreachable,
        "the server at {server} does not offer TLS, and sslmode={sslmode} requires it "
        "(database {db})",
        "enable ssl on the server, or lower sslmode (never below require for a remote server)",
    ),
    "tls": Kind(
        Unreachable,
        "TLS failed with the server at {where}: {detail}",
        "the server's certificate must be signed by sslrootcert's CA and name the host you "
        "connect to (sslmode=verify-full)",
    ),
    "tls-file": Kind(
        ConfigError,
        "a TLS file named in the connection settings is missing ({where}): {detail}",
        "check sslrootcert / sslcert / sslkey (or PGSSLROOTCERT) in MOVIE_DATABASE_URL",
    ),
    "conninfo": Kind(ConfigError, "libpq refused the connection settings for {where}: {detail}"),
    "statement-pooling": Kind(
        ConfigError,
        "{server} is a connection pooler in statement mode, and moviectl needs transactions "
        "(database {db}): {detail}",
        "give this database pool_mode=transaction (or session) in the pooler's config, "
        "or point MOVIE_DATABASE_URL at such a pool or at the server itself",
    ),
    # -- authorization (28), databases, privileges
    "28P01": Kind(AuthFailed, "password authentication failed for user {user} at {where}"),
    "28000": Kind(
        AuthFailed,
        "the server at {where} refused user {user}: {detail}",
        "check that the role exists and may log in, and pg_hba.conf allows this client",
    ),
    "28": Kind(AuthFailed, "not authorized as {user} at {where}: {detail}"),
    "no-password": Kind(
        AuthFailed,
        "the server at {where} wants a password for {user}, and none is set",
        "set MOVIE_DB_PASSWORD (or the password in MOVIE_DATABASE_URL)",
    ),
    "3D000": Kind(DatabaseMissing, "database {db} does not exist on {server}"),
    "57P04": Kind(DatabaseMissing, "database {db} on {server} was dropped while in use"),
    "42501": Kind(
        PermissionDenied,
        "{detail} (user {user} at {where})",
        "grant the role what it needs, or connect as another",
    ),
    "25006": Kind(
        PermissionDenied,
        "{where} accepts no writes: {detail}",
        "a hot standby, or default_transaction_read_only is on: connect to the primary",
    ),
    # -- the server's resources (53)
    "53300": Kind(
        Unreachable,
        "the server at {server} has no free connection slot for {user} ({detail}; database {db})",
        _SLOTS + " / the role's CONNECTION LIMIT",
    ),
    "53100": Kind(
        OutOfResources,
        "the server at {where} is out of disk space: {detail}",
        "free space on the server (its data directory, its WAL)",
    ),
    "53": Kind(OutOfResources, "the server at {where} ran out of resources: {detail}", _SERVER_LOG),
    # -- other sessions: locks, objects in use, conflicts (55, 40)
    LOCK_NOT_AVAILABLE: Kind(
        LockBusy, "a lock at {where} was not granted in time (lock_timeout): {detail}", _RETRY
    ),
    "55006": Kind(LockBusy, "{detail} (at {where})", _RETRY),
    "40P01": Kind(
        LockBusy,
        "deadlock with another session at {where}; this transaction was rolled back",
        "run it again",
    ),
    "40001": Kind(
        LockBusy,
        "a concurrent change at {where} conflicted; this transaction was rolled back: {detail}",
        "run it again",
    ),
    # -- operator intervention (57)
    "57P01": Kind(
        Unreachable,
        "the server at {where} ended the session: shut down or terminated by an "
        "administrator ({detail})",
        "retry once the server is back; `moviectl health` says when",
    ),
    "57P02": Kind(
        Unreachable,
        "the server at {where} crashed and restarted ({detail})",
        _SERVER_LOG + "; retry once it is back",
    ),
    "57P03": Kind(
        Unreachable,
        "the server at {where} is not accepting connections now: {detail}",
        "it is starting up, shutting down or in recovery: retry shortly (`moviectl health`)",
    ),
    QUERY_CANCELED: Kind(
        StatementCanceled,
        "a statement at {where} was cancelled: {detail}",
        "statement_timeout ended it, or another session cancelled it (pg_cancel_backend)",
    ),
    "57": Kind(Unreachable, "the server at {where} stopped this session: {detail}"),
    # -- the server's own failures (58, XX)
    "58": Kind(ServerFailed, "I/O error on the server at {where}: {detail}", _SERVER_LOG),
    "XX": Kind(ServerFailed, "the server at {where} failed: {detail}", _SERVER_LOG),
}


# The one place that reads error text: what libpq (or a child tool) says without a SQLSTATE.
# Per line, lowercased (libpq and the server write English by default); the first entry
# with a matching needle wins; "a & b": both on the line.
LIBPQ_TEXT: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "tls-file",
        ("does not exist & certificate", "does not exist & private key", "does not exist & crl"),
    ),
    ("no-tls", ("server does not support ssl",)),
    ("statement-pooling", ("not allowed in statement pooling mode",)),  # PgBouncer, 08P01
    ("lost", ("server closed the connection", "connection reset by peer", "eof detected")),
    ("lost", ("the connection is closed", "consuming input failed")),
    ("tls", ("certificate", "ssl error", "ssl syscall", "tlsv1 alert", "ssl handshake")),
    ("28P01", ("password authentication failed",)),
    ("no-password", ("no password supplied",)),
    ("53300", ("too many clients", "connection slots are reserved", "too many connections")),
    ("3D000", ('database " & does not exist',)),
    ("28000", ('role " & does not exist', "not permitted to log in", "no pg_hba.conf entry")),
    ("28000", ("authentication failed",)),
    ("42501", ("permission denied", "must be owner of")),
    ("57P01", ("terminating connection due to administrator command",)),
    ("57P03", ("the database system is starting up", "the database system is shutting down")),
    ("57P03", ("the database system is in recovery mode", "accepting connections")),
    ("dns", ("could not translate host name", "name or service not known", "nodename nor")),
    ("dns", ("failed to resolve host", "temporary failure in name resolution")),
    ("timeout", ("timeout expired", "timed out")),
    ("refused", ("connection refused", "no route to host", "network is unreachable")),
    ("refused", ("could not connect",)),
    ("conninfo", ("invalid connection option", "invalid dsn", "bad value for")),
    ("conninfo", ("value for connection option", "connection is bad: invalid")),
    ("conninfo", ('definition of service " & not found', "service file")),
)


def _matches(line: str, needles: tuple[str, ...]) -> bool:
    low = line.lower()
    return any(all(part in low for part in needle.split(" & ")) for needle in needles)


def driver_cause(exc: BaseException) -> BaseException | None:
    """The database driver's error behind ``exc`` (psycopg's own, or the one SQLAlchemy's
    ``DBAPIError`` wraps), else None. Imports neither: a module not loaded raised nothing."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return exc  # type: ignore[no-any-return]  # psycopg.Error, looked up at run time
    if type(exc).__module__.startswith("sqlalchemy."):
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            return exc.orig if isinstance(exc.orig, Exception) else exc
    return None


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE behind ``exc`` (unwrapping SQLAlchemy), if the server sent one."""
    cause = driver_cause(exc) or exc
    code = getattr(cause, "sqlstate", None)
    return code if isinstance(code, str) and code else None


def condition(exc: BaseException) -> str | None:
    """The key of ``exc`` in ``KINDS`` (None: not an expected condition)."""
    found = _reading(exc)
    return found[0] if found else None


def _reading(exc: BaseException) -> tuple[str, str] | None:
    """(key in ``KINDS``, the line that says it): the SQLSTATE (or its class) when the
    server sent one; else the first ``LIBPQ_TEXT`` entry a line matches; else, for a psycopg
    ``OperationalError`` (how libpq's own failures arrive), a failed connection."""
    cause = driver_cause(exc) or exc
    lines = [ln.strip() for ln in str(cause).strip().splitlines() if ln.strip()]
    code = sqlstate(exc)
    if code is not None and code != PROTOCOL_VIOLATION:
        key = code if code in KINDS else code[:2]
        diag = getattr(cause, "diag", None)
        primary = getattr(diag, "message_primary", None)
        return (key, primary or (lines[0] if lines else code)) if key in KINDS else None
    for key, needles in LIBPQ_TEXT:
        for line in lines:
            if _matches(line, needles):
                return key, _bare(line)
    if code is not None:  # an 08P01 no text names: a lost connection, as its class says
        return "08", lines[0] if lines else code
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(cause, psycopg.OperationalError):
        return "connection", _bare(lines[0] if lines else type(cause).__name__)
    return None


def is_lock_timeout(exc: BaseException) -> bool:
    return sqlstate(exc) == LOCK_NOT_AVAILABLE


def is_statement_timeout(exc: BaseException) -> bool:
    """57014 is statement_timeout and a cancel request alike: only the words tell them apart."""
    cause = driver_cause(exc) or exc
    return sqlstate(exc) == QUERY_CANCELED and "statement timeout" in str(cause)


def classify(
    exc: BaseException,
    target: DbTarget | None = None,
    connect_timeout: int | None = None,
    *,
    fallback: DbTarget | None = None,
) -> MoviectlError | None:
    """The user error of an expected driver condition (see the module docstring), else None
    (also for anything that is no driver error).

    ``target``: the connection's settings (None: host, port and database are read from the
    error's own connection, when it has one, else taken from ``fallback``)."""
    if driver_cause(exc) is None:
        return None
    return _known(exc, target or _target_of(exc) or fallback, connect_timeout)


def _known(
    exc: BaseException, target: DbTarget | None, connect_timeout: int | None
) -> MoviectlError | None:
    found = _reading(exc)
    if found is None:
        return None
    key, detail = found
    kind, t = KINDS[key], target or _target_of(exc)
    fields = _fields(t, detail, connect_timeout)
    message = _scrub(kind.message.format(**fields), t)
    hint = _scrub(kind.hint.format(**fields), t) if kind.hint else None
    return kind.error(message, hint=hint, **_details(t))


def translate(
    exc: BaseException, target: DbTarget, connect_timeout: int | None = None
) -> MoviectlError:
    """``classify``, always a ``MoviectlError``: an unexpected driver error is an
    ``InternalError``; a child tool's unrecognised complaint (no driver error) stays its
    own words, exit 1."""
    known = _known(exc, target, connect_timeout)  # a tool's words (pg_dump's) included
    if known is not None:
        return known
    cause = driver_cause(exc)
    lines = str(cause or exc).strip().splitlines()
    detail = _scrub(_bare(lines[0]) if lines else type(cause or exc).__name__, target)
    if cause is None:
        return MoviectlError(f"{detail} (at {target.where})", **_details(target))
    code = sqlstate(exc)
    what = type(cause).__name__ + (f" (SQLSTATE {code})" if code else "")
    return InternalError(f"internal error: {what} at {target.where}: {detail}", **_details(target))


def _fields(t: DbTarget | None, detail: str, connect_timeout: int | None) -> dict[str, str]:
    return {
        "where": t.where if t else "the server",
        "server": f"{t.host or 'local socket'}:{t.port}" if t else "the server",
        "db": repr(t.database) if t else "(unknown)",  # query errors carry no connection
        "user": repr(t.user) if t else "(unknown)",
        "detail": detail[:300],
        "secs": f" within {connect_timeout}s" if connect_timeout else "",
        "sslmode": t.sslmode if t else "?",
    }


def _bare(line: str) -> str:
    """A line of libpq's (or a tool's) without "connection to server at … failed:",
    "pg_dump: error:" and "FATAL:"/"ERROR:"."""
    for sep in (" failed: ", "error: "):
        if sep in line:
            line = line.rsplit(sep, 1)[1]
    for prefix in ("FATAL:", "ERROR:"):
        if line.startswith(prefix):
            line = line[len(prefix) :].strip()
    return line.strip()


def _target_of(exc: BaseException) -> DbTarget | None:
    """Host, port, user and database of the connection that raised ``exc`` (psycopg keeps
    it on the error), for errors that reach the one handler untranslated."""
    from moviectl.infra.conninfo import DbTarget

    pgconn = getattr(driver_cause(exc) or exc, "pgconn", None)
    if pgconn is None:
        return None
    try:
        host, port = pgconn.host.decode(), int(pgconn.port.decode() or 0)
        return DbTarget(host, port, pgconn.user.decode(), None, pgconn.db.decode())
    except Exception:  # a connection already finished says nothing more
        return None


def _details(target: DbTarget | None) -> dict[str, Any]:
    if target is None:
        return {}
    return {"host": target.host, "port": target.port, "database": target.database}


def _scrub(text: str, t: DbTarget | None) -> str:
    """A message never holds the password, whatever libpq echoed (a bad conninfo string)."""
    from moviectl.infra.conninfo import scrub

    return scrub(text, t.password, (t.database, t.user, t.host)) if t is not None else text
