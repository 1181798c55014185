"""What a killed backup, restore or restore drill leaves behind, and cleaning it up.

Every temp file is named ``.<backup>.<pid>@<host>.partial`` and every database a restore
or a drill creates carries moviectl's mark with ``pid`` and ``host`` while it loads. A
leftover is one whose process on this host is gone: the next backup, restore or verify
removes it; `moviectl doctor` reports it. Nothing another live process owns is touched,
nothing unmarked ever is, and nothing this role may not drop (a read-only backup role
beside a superuser's killed restore): that one stays, for `doctor` to report. Cleaning
up never fails the command it follows.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.backups.fileio import remove_path
from moviectl.infra.admin import (
    databases_named_like,
    drop_database_force,
    make_mark,
    may_drop,
)
from moviectl.infra.engine import connect
from moviectl.infra.processes import pid_alive

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[^/]+)\.partial$")
LOADING_KINDS = ("restore", "verify")


@dataclass
class Leftovers:
    partial_files: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.partial_files and not self.databases


def this_host() -> str:
    return socket.gethostname().replace("/", "_") or "localhost"


def partial_name(name: str) -> str:
    """The temp name for backup ``name``: whose it is (pid, host) is in the name."""
    return f".{name}.{os.getpid()}@{this_host()}.partial"


def loading_mark(kind: str) -> str:
    """The mark of a database a restore or drill is loading (it names the process)."""
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return make_mark(kind, state="loading", pid=os.getpid(), host=this_host(), started=started)


def _gone(pid: int, host: str) -> bool:
    """Is ``pid`` on ``host`` no longer running? Other hosts' processes are never judged."""
    return host == this_host() and not pid_alive(pid)


def _dead_partials(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _PARTIAL.match(p.name)
        if m and _gone(int(m["pid"]), m["host"]):
            found.append(p)
    return sorted(found)


def _dead_databases(conn: Any) -> list[str]:
    names = []
    for row in databases_named_like(conn, ""):
        mark = row["mark"]
        if not mark or mark.get("kind") not in LOADING_KINDS or mark.get("state") != "loading":
            continue
        pid, host = mark.get("pid"), mark.get("host")
        if isinstance(pid, int) and isinstance(host, str) and _gone(pid, host):
            names.append(row["name"])
    return names


def clean_partials(directory: Path) -> list[str]:
    """Remove killed runs' temp files in ``directory`` (no database needed)."""
    removed = []
    for p in _dead_partials(directory):
        remove_path(p)
        removed.append(str(p))
    return removed


def clean_databases(conn: Any) -> list[str]:
    """Drop the databases killed restores and drills were loading (on ``conn``'s server)
    that this role may drop; the names dropped. Not the one ``conn`` is on (a database
    cannot drop itself; the next run will). Best effort: whatever goes wrong (another
    role's database, a session that cannot be ended, a lock) leaves that database to
    `doctor` and never fails the caller."""
    dropped = []
    try:
        names = [n for n in _dead_databases(conn) if n != conn.info.dbname]
    except Exception:  # a cleanup that cannot even look stops quietly
        return []
    for name in names:
        try:
            if may_drop(conn, name):
                drop_database_force(conn, name)
                dropped.append(name)
        except Exception:  # someone else's, or busy: `doctor` reports it
            if not _usable(conn):
                break
    return dropped


def _usable(conn: Any) -> bool:
    """Can ``conn`` run another statement after a failed one? (autocommit: yes, unless
    the failure was the connection itself)"""
    from psycopg.pq import TransactionStatus

    return not conn.closed and conn.info.transaction_status != TransactionStatus.UNKNOWN


def find_leftovers(settings: Settings, directory: Path | None = None) -> Leftovers:
    """Leftovers of killed runs (nothing is changed)."""
    files = [str(p) for p in _dead_partials(Path(directory or settings.backup_dir))]
    with connect(settings.target("postgres"), connect_timeout=settings.connect_timeout) as c:
        return Leftovers(files, _dead_databases(c))
