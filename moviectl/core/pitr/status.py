"""`moviectl pitr status` and its `doctor` finding."""

from __future__ import annotations

from dataclasses import dataclass, field

from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.server import Archiver, archiver, connect_admin
from moviectl.core.pitr.store import (
    ArchiveFacts,
    BaseBackup,
    archive_facts,
    recoverable_range,
)
from moviectl.infra.errors import MoviectlError
from moviectl.infra.settings import Settings


@dataclass
class PitrStatus:
    repository: str
    archiver: Archiver | None  # None: the server did not answer
    server_error: str | None
    archive: ArchiveFacts
    base_backups: list[BaseBackup]
    recoverable_from: str | None
    recoverable_to: str | None
    restores: list[dict[str, object]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    server_exit_code: int | None = None  # the server error's exit code (3 unreachable, ...)

    @property
    def ok(self) -> bool:
        return not self.warnings

    __json_extra__ = ("ok",)


def status(settings: Settings) -> PitrStatus:
    from moviectl.core.pitr.restore import list_restores

    store = store_of(settings)
    live, error, code = None, None, None
    try:
        with connect_admin(settings) as conn:
            live = archiver(conn)
    except MoviectlError as exc:  # the repository's facts are still shown
        error, code = exc.message, int(exc.exit_code)
    facts = archive_facts(store)
    bases = store.bases()
    low, high = recoverable_range(bases, facts)
    st = PitrStatus(store.describe(), live, error, facts, bases, low, high)
    st.server_exit_code = code
    st.restores = list_restores(settings)
    st.warnings = interrupted_promote(settings) + warnings(st) + _elsewhere(store, live, bases)
    return st


def _elsewhere(store: object, live: Archiver | None, bases: list[BaseBackup]) -> list[str]:
    """With an s3:// repository: what still goes to, or lies in, the local directory."""
    if not hasattr(store, "wal_repo"):
        return []
    out = []
    if live is not None and live.on and "s3-wal.sh" not in live.archive_command:
        out.append(
            "WAL is archived elsewhere, not into the s3:// repository: run `moviectl pitr "
            "enable`, then take a base backup"
        )
    listed = {b.id for b in bases}
    local = getattr(store, "root", None)
    stray = (
        sorted(p.parent.name for p in local.glob("base/[!.]*/meta.json"))
        if local is not None
        else []
    )
    stray = [x for x in stray if x not in listed]
    if stray:
        out.append(
            f"{len(stray)} base backup(s) in {local}/base are not in the s3:// repository "
            f"(e.g. {stray[0]}): restores there need MOVIE_BACKUP_REPO unset"
        )
    return out


def interrupted_promote(settings: Settings) -> list[str]:
    """A killed `pitr promote` leaves its journal: the one step that finishes it."""
    from pathlib import Path

    from moviectl.core.pitr.server import backend_name
    from moviectl.core.servers import swap_journal
    from moviectl.infra.processes import pid_alive

    try:
        j = swap_journal.read(Path(settings.data_dir))
    except MoviectlError as exc:  # not a journal moviectl wrote: said, never guessed at
        return [exc.message]
    if j is None or pid_alive(int(j.get("pid") or 0)):
        return []
    # Docker's volume is never left empty, so its `db up` is not refused meanwhile
    refused = "`db up`" if backend_name(settings) == "embedded" else "`pitr discard`"
    return [
        f"a `pitr promote {j['name']}` was interrupted: finish it with "
        f"`moviectl pitr promote {j['name']} --yes` ({refused} refuses until then)"
    ]


def warnings(st: PitrStatus) -> list[str]:
    out = []
    live = st.archiver
    if live is not None and not live.on:
        out.append("WAL archiving is off: run `moviectl pitr enable`")
    if live is not None and live.on and live.failing:
        out.append(
            f"archiving is failing ({live.failed_count} failures, last {live.last_failed_wal} "
            f"at {live.last_failed_time}): PostgreSQL keeps the WAL until the repository "
            "is back; see the server log"
        )
    if st.archive.gaps:
        out.append(
            f"the archive is missing {len(st.archive.gaps)} segment(s), first "
            f"{st.archive.gaps[0]}: restores past it fail; take a base backup now"
        )
    if live is not None and live.on and not st.base_backups:
        out.append("no base backup yet: run `moviectl backup --physical`")
    return out


def doctor_finding(settings: Settings) -> tuple[str, str, str, str]:
    """(name, ok|warn, detail, fix) for `doctor`: archiving off is fine, failing is not."""
    try:
        st = status(settings)
    except MoviectlError as exc:
        return ("WAL archive", "warn", exc.message, exc.hint or "")
    live = st.archiver
    first = st.warnings[0] if st.warnings else ""
    if first.startswith("a `pitr promote") or "promoting.json" in first:
        return ("WAL archive", "warn", st.warnings[0], "moviectl pitr status")
    if live is None or not live.on:
        return ("WAL archive", "ok", "archiving off (point-in-time recovery not set up)", "")
    if st.warnings:
        return ("WAL archive", "warn", st.warnings[0], "moviectl pitr status")
    age = live.last_archived_age_seconds
    detail = f"archived {live.archived_count}, last {live.last_archived_wal}"
    detail += f" {age:.0f}s ago" if age is not None else ""
    return ("WAL archive", "ok", f"{detail}; {len(st.base_backups)} base backup(s)", "")
