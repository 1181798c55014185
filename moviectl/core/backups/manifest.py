"""The manifest beside each backup, and the backup directory's listing and pruning.

``<file>.manifest.json`` records the backup's sha256, size, compression, versions,
database, Alembic revision, row counts per table, timings and the last restore drill.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.backups.fileio import remove_path, sha256_of, size_of, write_json_atomic
from moviectl.core.backups.objects import DOCUMENT_LIMIT
from moviectl.infra.errors import CheckFailed, InputFileError
from moviectl.infra.files import read_small

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

FORMATS = {"custom": ("c", ".dump"), "directory": ("d", ".dir"), "plain": ("p", ".sql")}


@dataclass
class Manifest:
    file: str
    format: str
    sha256: str
    size_bytes: int
    database: str
    server_version: str
    server_major: int
    pg_dump_version: str
    alembic_revision: str | None
    row_counts: dict[str, int]
    started_at: str
    finished_at: str
    seconds: float
    verified_at: str | None = None
    verify_result: str | None = None
    # which pg_restore can read the file (None: plain SQL, any psql); a note when the dump
    # had to be made by a newer pg_dump than the server's own
    pg_restore_min_major: int | None = None
    note: str | None = None
    # how pg_dump compressed it, as PostgreSQL 16+ spells -Z ("zstd:1", "gzip:6", "none");
    # None: a backup made before moviectl chose (pg_dump's default, or what -Z said)
    compression: str | None = None
    dump_seconds: float | None = None  # pg_dump's own time (seconds adds the read-back)


@dataclass
class BackupEntry:
    path: str
    created: str | None
    size_bytes: int | None
    revision: str | None
    verified_at: str | None
    manifest: bool
    verify_result: str | None = None  # ok | mismatch (the last drill's)
    signature: str | None = None  # signing.state(): ok, unsigned, bad, unknown key, signed

    @classmethod
    def of(cls, where: str, m: Manifest, signature: str | None = None) -> BackupEntry:
        return cls(
            where,
            m.finished_at,
            m.size_bytes,
            m.alembic_revision,
            m.verified_at,
            True,
            m.verify_result,
            signature,
        )


@dataclass
class VerifyResult:
    path: str
    checksum_ok: bool
    restored_into: str | None
    revision_ok: bool
    counts_ok: bool
    differences: list[str] = field(default_factory=list)

    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.checksum_ok and self.revision_ok and self.counts_ok

    __json_extra__ = ("ok",)


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


_TYPES: dict[str, tuple[type, ...]] = {
    "file": (str,),
    "format": (str,),
    "sha256": (str,),
    "size_bytes": (int,),
    "database": (str,),
    "server_version": (str,),
    "server_major": (int,),
    "pg_dump_version": (str,),
    "alembic_revision": (str, type(None)),
    "row_counts": (dict,),
    "started_at": (str,),
    "finished_at": (str,),
    "seconds": (int, float),
    "verified_at": (str, type(None)),
    "verify_result": (str, type(None)),
    "pg_restore_min_major": (int, type(None)),
    "note": (str, type(None)),
    "compression": (str, type(None)),
    "dump_seconds": (int, float, type(None)),
}


def _checked(data: object, mpath: Path) -> dict[str, object]:
    """The manifest's fields, each of the type it must have (a hand-edited or damaged
    manifest is a clear error, never a traceback later)."""
    if not isinstance(data, dict):
        raise InputFileError(f"the manifest {mpath} is not a JSON object")
    out = {}
    for key, kinds in _TYPES.items():
        if key not in data:
            if type(None) in kinds:
                continue
            raise InputFileError(f"the manifest {mpath} lacks {key!r}")
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            want = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise InputFileError(f"the manifest {mpath}: {key!r} must be {want}")
        out[key] = value
    counts = out["row_counts"]
    assert isinstance(counts, dict)
    if not all(isinstance(k, str) and type(v) is int for k, v in counts.items()):
        raise InputFileError(f"the manifest {mpath}: 'row_counts' must map tables to integers")
    if out["format"] not in FORMATS or not re.fullmatch(r"[0-9a-f]{64}", str(out["sha256"])):
        raise InputFileError(f"the manifest {mpath}: bad 'format' or 'sha256'")
    try:
        datetime.fromisoformat(str(out["finished_at"]))
        datetime.fromisoformat(str(out["started_at"]))
    except ValueError:
        raise InputFileError(f"the manifest {mpath}: bad timestamps") from None
    return out


checked_fields = _checked  # for manifests read from a repository (catalog.py)


def load_manifest(path: Path) -> Manifest:
    mpath = manifest_path(path)
    if not path.exists():
        raise InputFileError(f"backup not found: {path}", hint="`moviectl backup list` shows them")
    try:
        data = json.loads(read_small(mpath, DOCUMENT_LIMIT).decode())
    except FileNotFoundError:
        raise InputFileError(
            f"no manifest beside {path} ({mpath.name})",
            hint="a pg_dump file made elsewhere: `moviectl restore` takes it, unverified",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputFileError(f"the manifest {mpath} is unreadable: {exc}") from None
    except OSError as exc:  # a FIFO, a directory or a huge file under the manifest's name
        raise InputFileError(f"the manifest {mpath} is unreadable: {exc.strerror}") from None
    return Manifest(**_checked(data, mpath))  # type: ignore[arg-type]


def check_checksum(path: Path, man: Manifest, hashed: str | None = None) -> None:
    """The file's size and sha256 against the manifest. ``hashed``: the sha256 of the very
    bytes written to ``path``, computed as they were downloaded into a private staging
    directory (``catalog.staged``): compared instead of reading the file a second time."""
    # a file of another size fails now, not after hours of hashing (a FIFO: refused below)
    size = size_of(path) if path.is_file() or path.is_dir() else man.size_bytes
    if man.size_bytes and size != man.size_bytes:
        raise CheckFailed(
            f"checksum mismatch for {path.name}: the file is corrupted or truncated "
            f"({size} bytes, the manifest says {man.size_bytes})",
            hint="do not restore it; use another backup (`moviectl backup list`)",
        )
    actual = hashed or sha256_of(path)
    if actual != man.sha256:
        raise CheckFailed(
            f"checksum mismatch for {path.name}: the file is corrupted or truncated "
            f"(sha256 {actual[:12]}…, manifest says {man.sha256[:12]}…)",
            hint="do not restore it; use another backup (`moviectl backup list`)",
        )


def list_backups(settings: Settings, directory: Path | None = None) -> list[BackupEntry]:
    d = Path(directory or settings.backup_dir)
    if not d.is_dir():
        return []
    entries = []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or p.name.endswith(".manifest.json"):
            continue
        if not p.name.endswith(tuple(s for _, s in FORMATS.values())):
            continue
        try:
            entries.append(BackupEntry.of(str(p), load_manifest(p)))
        except InputFileError:
            entries.append(BackupEntry(str(p), None, size_of(p), None, None, False))
    entries.sort(key=lambda e: e.created or "")
    return entries


def prune(settings: Settings, keep: int, directory: Path | None = None) -> list[str]:
    """Delete the oldest backups beyond ``keep``; never the newest verified one."""
    entries = [e for e in list_backups(settings, directory) if e.manifest]
    newest_verified = next((e.path for e in reversed(entries) if e.verified_at), None)
    doomed = [e for e in entries[: max(0, len(entries) - keep)] if e.path != newest_verified]
    for e in doomed:
        remove_path(Path(e.path))
        manifest_path(Path(e.path)).unlink(missing_ok=True)
    return [e.path for e in doomed]


def record_verification(path: Path, man: Manifest, ok: bool) -> None:
    """Write the outcome of a restore drill into the backup's manifest."""
    man.verified_at = datetime.now(UTC).isoformat() if ok else man.verified_at
    man.verify_result = "ok" if ok else "mismatch"
    doc: dict[str, object] = {}
    try:  # keep the fields Manifest does not model (signature, encryption)
        raw = json.loads(manifest_path(path).read_text(encoding="utf-8"))
        doc = raw if isinstance(raw, dict) else {}
    except (OSError, ValueError):
        pass
    doc.update(asdict(man))
    write_json_atomic(manifest_path(path), doc)
