"""Where PITR keeps its things: base backups, the WAL archive, restore points.

``PitrStore`` is the small interface the rest of ``core/pitr`` uses; ``LocalStore`` is a
directory (``MOVIE_BACKUP_DIR/pitr``). A repository layer shared with the off-site
backups can stand in for it later: nothing outside this module knows the layout.

Restore points (``marks.json``) and the file helpers are ``core/restore_points.py``'s
(`migrate` marks one, and imports nothing of this package). Layout: ``base/<id>/``
(``base.tar.gz``, ``pg_wal.tar.gz``, ``backup_manifest``, ``meta.json``), ``wal/`` (what
``archive_command`` writes), ``marks.json``. A base backup is made in
``base/.partial-<id>-<pid>`` and renamed when complete and verified: a killed one is never
listed, and the next run removes it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from moviectl.core.restore_points import Mark as Mark  # re-exported: pitr's names
from moviectl.core.restore_points import add_mark, read_marks
from moviectl.core.restore_points import make_private_dir as make_private_dir
from moviectl.infra.files import fsync_dir as fsync_dir
from moviectl.infra.files import write_json_atomic as write_json_atomic
from moviectl.infra.processes import pid_alive

SEGMENT = re.compile(r"^[0-9A-F]{24}$")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


def parse_lsn(text: str) -> int:
    hi, lo = text.strip().split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, seg_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    per_log = 0x100000000 // seg_size
    n = lsn // seg_size
    return f"{timeline:08X}{n // per_log:08X}{n % per_log:08X}"


def segment_number(name: str, seg_size: int = DEFAULT_SEGMENT_SIZE) -> int:
    return int(name[8:16], 16) * (0x100000000 // seg_size) + int(name[16:24], 16)


class IdTaken(Exception):
    """Another run holds this base backup id (started in the same millisecond)."""


def new_base_id() -> str:
    """A base backup's id: its start time to the millisecond (UTC)."""
    now = dt.datetime.now(dt.UTC)
    return f"base-{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"


@dataclass
class BaseBackup:
    id: str
    path: str
    started_at: str  # the server's clock, ISO 8601
    finished_at: str  # after pg_basebackup returned: the earliest time it restores to
    start_lsn: str
    end_lsn: str
    timeline: int
    segment_size: int
    server_major: int
    size_bytes: int
    compression: str
    verified: bool = False  # pg_verifybackup passed
    drill: dict[str, Any] | None = None  # the last `backup verify --physical`
    parent: str | None = None  # incremental to this base backup (``pitr/chain.py``)

    @property
    def start_segment(self) -> str:
        return segment_name(self.timeline, parse_lsn(self.start_lsn), self.segment_size)


@dataclass
class WalFile:
    name: str
    size: int
    mtime: float


@dataclass
class ArchiveFacts:
    segments: int
    newest: str | None
    newest_mtime: float | None
    end_lsn: str | None  # the end of the newest complete segment
    gaps: list[str] = field(default_factory=list)


class PitrStore(Protocol):
    def describe(self) -> str: ...
    def wal_dir(self) -> Path: ...
    def bases(self) -> list[BaseBackup]: ...
    # a context manager giving a work dir; exclusive: IdTaken when another run holds the id
    def new_base(self, base_id: str, exclusive: bool = False) -> Any: ...
    def save_meta(self, base: BaseBackup) -> None: ...
    def remove_base(self, base_id: str) -> None: ...
    def wal_files(self) -> list[WalFile]: ...
    def remove_wal(self, names: list[str]) -> None: ...
    def marks(self) -> list[Mark]: ...
    def add_mark(self, mark: Mark) -> None: ...
    def clean_partials(self) -> list[str]: ...


class LocalStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def describe(self) -> str:
        return str(self.root)

    def wal_dir(self) -> Path:
        return self.root / "wal"

    def _base_dir(self) -> Path:
        return self.root / "base"

    def bases(self) -> list[BaseBackup]:
        """Complete base backups, oldest first (a partial one has no name yet)."""
        found = []
        d = self._base_dir()
        for meta in sorted(d.glob("[!.]*/meta.json")) if d.is_dir() else []:
            try:
                data = json.loads(meta.read_text())
                data["path"] = str(meta.parent)
                found.append(BaseBackup(**data))
            except (OSError, ValueError, TypeError):
                continue  # unreadable: not offered for a restore
        return sorted(found, key=lambda b: dt.datetime.fromisoformat(b.finished_at))

    @contextmanager
    def new_base(self, base_id: str, exclusive: bool = False) -> Iterator[Path]:
        """A work directory, renamed to ``base/<id>`` if the block ends normally.

        ``exclusive``: IdTaken (nothing left behind) when another run holds the id. Each
        run makes its directory before looking for a rival's, so of two runs started in
        the same millisecond at least one sees the other (both may, and both draw again):
        two never finish onto one name."""
        d = self._base_dir()
        make_private_dir(d)
        work = d / f".partial-{base_id}-{os.getpid()}"
        work.mkdir(mode=0o700)
        if exclusive and (
            (d / base_id).exists() or any(p != work for p in d.glob(f".partial-{base_id}-*"))
        ):
            work.rmdir()
            raise IdTaken(base_id)
        try:
            yield work
            os.rename(work, self._base_dir() / base_id)
            fsync_dir(self._base_dir())
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def save_meta(self, base: BaseBackup) -> None:
        data = asdict(base)
        data.pop("path")
        write_json_atomic(Path(base.path) / "meta.json", data)

    def remove_base(self, base_id: str) -> None:
        path = self._base_dir() / base_id
        # renamed first: a half-deleted backup is never listed
        doomed = self._base_dir() / f".partial-{base_id}-deleting-{os.getpid()}"
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def wal_files(self) -> list[WalFile]:
        d = self.wal_dir()
        out = []
        for entry in os.scandir(d) if d.is_dir() else []:
            if entry.name.startswith("."):
                continue
            st = entry.stat()
            out.append(WalFile(entry.name, st.st_size, st.st_mtime))
        return sorted(out, key=lambda w: w.name)

    def remove_wal(self, names: list[str]) -> None:
        for name in names:
            (self.wal_dir() / name).unlink(missing_ok=True)

    def marks(self) -> list[Mark]:
        return read_marks(self.root)

    def add_mark(self, mark: Mark) -> None:
        add_mark(self.root, mark)

    def clean_partials(self) -> list[str]:
        """Remove what killed runs left (``.partial-*-<pid>`` of a dead pid)."""
        removed = []
        d = self._base_dir()
        for p in d.glob(".partial-*") if d.is_dir() else []:
            pid = p.name.rsplit("-", 1)[-1]
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
        wal = self.wal_dir()
        for tmp in wal.glob(".*.tmp") if wal.is_dir() else []:
            pid = tmp.name.rsplit(".", 2)[-2]
            if pid.isdigit() and not pid_alive(int(pid)):
                tmp.unlink(missing_ok=True)
        return removed


def archive_facts(store: PitrStore, seg_size: int = DEFAULT_SEGMENT_SIZE) -> ArchiveFacts:
    """What the archive holds: its newest segment and where WAL is missing.

    A gap is a segment missing between the oldest and newest of a timeline, or between
    the oldest base backup's start and the oldest archived segment of its timeline.
    """
    files = store.wal_files()
    segs = [w for w in files if SEGMENT.match(w.name)]
    by_tli: dict[int, list[int]] = {}
    for w in segs:
        by_tli.setdefault(int(w.name[:8], 16), []).append(segment_number(w.name, seg_size))
    bases = store.bases()
    gaps: list[str] = []
    for tli, numbers in sorted(by_tli.items()):
        have = set(numbers)
        low = min(numbers)
        starts = [segment_number(b.start_segment, seg_size) for b in bases if b.timeline == tli]
        if starts:
            low = min(low, min(starts))
        per_log = 0x100000000 // seg_size
        for n in range(low, max(numbers)):
            if n not in have:
                gaps.append(f"{tli:08X}{n // per_log:08X}{n % per_log:08X}")
    if not segs:
        return ArchiveFacts(0, None, None, None, gaps)
    newest = max(segs, key=lambda w: (int(w.name[:8], 16), w.name[8:]))
    end = (segment_number(newest.name, seg_size) + 1) * seg_size
    return ArchiveFacts(len(segs), newest.name, newest.mtime, format_lsn(end), gaps[:50])


def iso_of(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def recoverable_range(
    bases: list[BaseBackup], facts: ArchiveFacts
) -> tuple[str | None, str | None]:
    """From the oldest base backup's end to the newest archived segment (or the newest
    base backup's end, whichever is later)."""
    if not bases:
        return None, None
    newest = max(b.finished_at for b in bases)
    end = iso_of(facts.newest_mtime) if facts.newest_mtime is not None else newest
    later = max(end, newest, key=dt.datetime.fromisoformat)
    return bases[0].finished_at, later
