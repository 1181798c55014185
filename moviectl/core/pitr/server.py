"""The server PITR works on: which backend, its archiver, and handing paths to its user."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviectl.infra.settings import Settings

PITR_CONF = "moviectl-pitr.conf"
PITR_INCLUDE = f"include_if_exists = '{PITR_CONF}'"


def backend_name(settings: Settings) -> str:
    name = str(settings.db_backend)
    if name == "auto":
        from moviectl.core.servers import resolve_auto

        name = resolve_auto(settings)
    return name.rstrip("?")


def give_to_server(path: Path) -> None:
    """As root, the embedded server runs as its own user: let it use ``path`` (owner) and
    reach it (o+x on each ancestor, as ``cluster.py`` does for the data directory)."""
    if os.geteuid() != 0:
        return
    from moviectl.core.servers.cluster import SYSTEM_USER, ensure_system_user

    ensure_system_user()
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for p in path.parents:
        try:
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o001)
        except OSError:
            pass


def chown_tree(path: Path) -> None:
    """As root: ``path`` and everything under it to the server's user."""
    if os.geteuid() != 0:
        return
    from moviectl.core.servers.cluster import SYSTEM_USER

    entry = pwd.getpwnam(SYSTEM_USER)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)
    os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class Archiver:
    """``pg_stat_archiver`` and the settings archiving depends on."""

    wal_level: str
    archive_mode: str
    archive_command: str
    archive_timeout: int
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: str | None
    last_archived_age_seconds: float | None
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: str | None
    failing: bool  # the last attempt failed (a failure newer than the last success)
    server_major: int

    @property
    def on(self) -> bool:
        return self.archive_mode in ("on", "always") and bool(self.archive_command)


def _iso(t: Any) -> str | None:
    return t.isoformat() if t is not None else None


def one(conn: Any, query: str, params: tuple[Any, ...] = ()) -> Any:
    """The one row ``query`` returns."""
    row = conn.execute(query, params).fetchone()
    if row is None:  # pragma: no cover - every query here returns a row
        raise RuntimeError(f"no row from {query!r}")
    return row


def archiver(conn: Any) -> Archiver:
    row = one(
        conn,
        "SELECT current_setting('wal_level'), current_setting('archive_mode'),"
        " current_setting('archive_command'),"
        " current_setting('archive_timeout')::interval,"
        " archived_count, last_archived_wal, last_archived_time,"
        " extract(epoch FROM now() - last_archived_time)::float8,"
        " failed_count, last_failed_wal, last_failed_time,"
        " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),"
        " current_setting('server_version_num')::int / 10000"
        " FROM pg_stat_archiver",
    )
    return Archiver(
        wal_level=row[0],
        archive_mode=row[1],
        archive_command=row[2],
        archive_timeout=int(row[3].total_seconds()),
        archived_count=row[4],
        last_archived_wal=row[5],
        last_archived_time=_iso(row[6]),
        last_archived_age_seconds=round(row[7], 1) if row[7] is not None else None,
        failed_count=row[8],
        last_failed_wal=row[9],
        last_failed_time=_iso(row[10]),
        failing=bool(row[11]),
        server_major=row[12],
    )


def connect_admin(settings: Settings) -> Any:
    from moviectl.infra.engine import connect

    return connect(settings.target(), connect_timeout=settings.connect_timeout)


def push_wal(conn: Any, wait: float = 30.0) -> tuple[str, bool]:
    """Close the current WAL segment after a fresh commit, and wait (bounded) until the
    archiver has it: a restore to "now" then finds a commit after its target in the archive.
    (The segment's name, whether the archiver had it within ``wait`` seconds.)"""
    import time

    conn.execute("SELECT pg_current_xact_id()")  # a commit record stamped now
    lsn = one(conn, "SELECT pg_switch_wal()")[0]
    name = one(conn, "SELECT pg_walfile_name(%s)", (lsn,))[0]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        last = one(conn, "SELECT last_archived_wal FROM pg_stat_archiver")[0]
        if last is not None and len(last) == 24 and last[8:] >= name[8:]:
            return str(name), True
        time.sleep(0.2)
    return str(name), False


def archive_current_wal(settings: Settings, *, refuse: bool) -> list[str]:
    """With the source server up and archiving: archive the WAL written so far, waiting
    at most MOVIE_STALL_TIMEOUT. A segment the archiver has not taken by then (failing or
    stalled) is a warning, never a silent restore short of the newest commits; ``refuse``
    (`--latest --promote`: the live server's newest commits would be lost) stops here."""
    from moviectl.infra.errors import MoviectlError, Refused

    wait, name = float(settings.stall_timeout), None
    try:
        with connect_admin(settings) as conn:
            if one(conn, "SELECT current_setting('archive_mode')")[0] == "on":
                name, archived = push_wal(conn, wait)
                name = None if archived else name
    except MoviectlError:
        pass  # the server is down: restore from what the archive holds
    if name is None:
        return []
    why = f"the server's archiver had not archived WAL segment {name} within {wait:g} s"
    if refuse:
        raise Refused(
            f"{why}: promoted, a --latest restore would lose the commits in it; nothing "
            "was restored",
            hint="`moviectl pitr status` says why archiving is behind; restore without "
            "--promote to see what the archive holds",
        )
    return [f"{why}: this restore ends before the commits in it (see `moviectl pitr status`)"]
