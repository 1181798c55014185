"""One exception root for everything an operator can get wrong or run into.

Each subclass carries an exit code and a hint; the CLI renders any of them in one
place (one red line, a hint, no traceback unless ``--verbose``). Library code
raises these and never prints or exits.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """The exit codes of every moviectl command (documented in the README)."""

    OK = 0
    FAILED = 1  # a check failed, drift found, verification mismatch
    USAGE = 2  # bad flag, bad config value, malformed URL, unknown revision, bad input file
    UNREACHABLE = 3  # host down, port closed, DNS, timeout
    AUTH = 4  # wrong password, permission denied, missing database
    REFUSED = 5  # a safety rail refused, or confirmation needed and not given
    BEHIND = 6  # migrations pending (migrate status, health migrations)
    BUSY = 7  # a lock is held by someone else (migration lock, server start lock)
    SERVER = 8  # the server could not be started/stopped (port taken, engine down, crash)
    TOOL = 9  # a required external tool is missing or too old (pg_dump, pgcli, docker)
    INTERNAL = 10  # a bug in moviectl: an unexpected error (run with -v and report it)


class MoviectlError(Exception):
    """Root of moviectl's errors: a one-line message, a hint and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "exit_code": int(self.exit_code),
            **({"details": self.details} if self.details else {}),
        }


class CheckFailed(MoviectlError):
    pass


class UsageError(MoviectlError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    default_hint = "run `moviectl config show` to see every setting and where it came from"


class InputFileError(UsageError):
    pass


class UnknownRevision(UsageError):
    default_hint = "run `moviectl migrate history` to list the known revisions"


class Unreachable(MoviectlError):
    exit_code = ExitCode.UNREACHABLE
    default_hint = "is the server running? start it with `moviectl db up`"


class AuthFailed(MoviectlError):
    exit_code = ExitCode.AUTH
    default_hint = "check MOVIE_DB_USER / MOVIE_DB_PASSWORD (or MOVIE_DATABASE_URL)"


class DatabaseMissing(AuthFailed):
    default_hint = (
        "create it with `moviectl db up` (or `moviectl db reset`), or check MOVIE_DB_NAME"
    )


class PermissionDenied(AuthFailed):
    pass


class Refused(MoviectlError):
    exit_code = ExitCode.REFUSED


class ConfirmationRequired(Refused):
    default_hint = "re-run with --yes to confirm"


class MigrationsBehind(MoviectlError):
    exit_code = ExitCode.BEHIND
    default_hint = "run `moviectl migrate`"


class LockBusy(MoviectlError):
    exit_code = ExitCode.BUSY


class ServerError(MoviectlError):
    exit_code = ExitCode.SERVER


class PortInUse(ServerError):
    pass


class StatementCanceled(MoviectlError):
    """A statement the server cancelled: statement_timeout, or pg_cancel_backend."""


class OutOfResources(MoviectlError):
    """The server ran out of disk, memory or a configured limit."""


class ServerFailed(MoviectlError):
    """The server's own failure: an I/O error, corruption, an internal error (see its log)."""


class ToolMissing(MoviectlError):
    exit_code = ExitCode.TOOL


class InternalError(MoviectlError):
    exit_code = ExitCode.INTERNAL
    default_hint = "this is a bug in moviectl: run again with -v and report the traceback"


def from_os_error(exc: OSError) -> MoviectlError:
    """An operating-system error at a boundary (files, sockets) as one of moviectl's."""
    import errno
    import socket

    where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        return MoviectlError(f"disk full{where}", hint="free space, or write somewhere else")
    if isinstance(exc, socket.gaierror):
        return UsageError(f"host name does not resolve{where}: {reason}", hint="check the host")
    if exc.errno == errno.EADDRINUSE:
        return PortInUse(f"address already in use{where}: {reason}")
    if exc.errno in (
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.EINVAL,
    ):
        return UsageError(f"{reason}{where}", hint="check the path and its permissions")
    return MoviectlError(f"{reason}{where}")
