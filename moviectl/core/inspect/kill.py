"""`inspect kill`: cancel a session's query, or end the session, carefully.

``find`` says what the pid is (and refuses what must not be stopped: this connection,
moviectl's own sessions, replication and the server's own processes); ``stop`` signals it
only if the pid is still the same session (same start time: a pid is reused).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from moviectl.infra.conninfo import APP_NAME
from moviectl.infra.errors import Refused, UsageError

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

TERMINATE_WAIT_MS = 5000  # pg_terminate_backend waits this long for the session to end


@dataclass
class SessionInfo:
    pid: int
    user: str | None
    database: str | None
    application: str | None
    client: str | None
    backend_type: str | None
    state: str | None
    query: str | None
    backend_start: datetime | None

    def describe(self) -> str:
        what = self.query if self.query and self.query != "<insufficient privilege>" else None
        return (
            f"pid {self.pid} ({self.user or '?'}@{self.database or '?'}, "
            f"{self.application or 'no application name'}, {self.state or 'state hidden'})"
            + (f": {what[:80]}" if what else "")
        )


@dataclass
class KillResult:
    pid: int
    action: str  # "cancel" or "terminate"
    stopped: bool  # the server signalled it (and, terminating, it ended)
    session: SessionInfo
    message: str


SESSION = """
SELECT pid, usename AS user, datname AS database, application_name AS application,
       client_addr::text AS client, backend_type, state, query, backend_start
  FROM pg_stat_activity WHERE pid = %(pid)s
"""


def _session(i: Any, pid: int) -> SessionInfo:
    rows = i.rows(SESSION, {"pid": pid})
    if not rows:
        raise UsageError(
            f"no session with pid {pid} on this server",
            hint="see `moviectl inspect long-running` or `inspect blocking` for pids",
        )
    s = SessionInfo(**rows[0])
    if pid == i.value("SELECT pg_backend_pid()"):
        raise Refused(f"pid {pid} is this very connection", hint=None)
    if (s.application or "").startswith(APP_NAME):
        raise Refused(
            f"refusing to stop {s.describe()}: it is moviectl's own "
            "(a migration, backup or seed stops itself safely on Ctrl-C)",
            hint="stop that moviectl command where it runs",
        )
    if s.backend_type == "walsender" or (s.backend_type or "").startswith("logical replication"):
        raise Refused(
            f"refusing to stop {s.describe()}: it is a replication session ({s.backend_type})",
            hint="stop the standby or subscription instead, or drop its slot",
        )
    if s.backend_type is not None and s.backend_type != "client backend":
        raise Refused(
            f"refusing to stop pid {pid}: it is the server's own {s.backend_type} process",
            hint=None,
        )
    return s


def find(settings: Settings, pid: int) -> SessionInfo:
    """The session ``pid``, if it may be stopped (else ``Refused``/``UsageError``)."""
    from moviectl.core.inspect.session import inspecting

    with inspecting(settings) as i:
        return _session(i, pid)


def stop(settings: Settings, pid: int, *, terminate: bool = False) -> KillResult:
    """Cancel ``pid``'s query (or terminate its session), checking it again first."""
    from moviectl.core.inspect.session import inspecting

    action = "terminate" if terminate else "cancel"
    with inspecting(settings, timeout_ms=TERMINATE_WAIT_MS + 5000) as i:
        s = _session(i, pid)
        fn = (
            f"pg_terminate_backend(pid, {TERMINATE_WAIT_MS})"
            if terminate
            else "pg_cancel_backend(pid)"
        )
        # the same session (pid and start time), not a newer one that reuses the pid
        done = i.value(
            f"SELECT {fn} FROM pg_stat_activity WHERE pid = %(pid)s "
            "AND backend_start IS NOT DISTINCT FROM %(start)s",
            {"pid": pid, "start": s.backend_start},
        )
    stopped = bool(done)
    if terminate:
        message = f"terminated {s.describe()}" if stopped else f"{s.describe()} did not end"
    else:
        message = (
            f"cancelled the query of {s.describe()}"
            if stopped
            else f"could not cancel {s.describe()}: it had ended"
        )
    return KillResult(pid, action, stopped, s, message)
