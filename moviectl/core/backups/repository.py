"""Where backups live: a local directory (the default) or an object store bucket.

A repository is a flat namespace of named objects under one root (a directory, or
``s3://bucket/prefix``). The interface is small on purpose, so that backups and
point-in-time recovery (WAL archives) share it:

- ``put(name, source)``: store ``source`` (a local file or an iterator of byte blocks)
  under ``name``, atomically: a reader sees the whole object under ``name`` or nothing
  (local: a ``.partial`` temp file renamed; S3: one multipart upload, which the server
  makes visible only when it completes). Returns the bytes written.
- ``stream(name)`` yields its bytes in blocks; ``get(name, dest)`` copies it to a local file.
- ``read_bytes`` / ``write_bytes``: small objects (manifests, markers), written atomically.
- ``list(prefix)`` the complete objects; ``delete(name)`` (a missing one is fine);
  ``stat(name)`` the size and time of one, or None.
- ``check()`` fails with a ``MoviectlError`` (exit 3 unreachable, 4 credentials, 2 no such
  bucket or directory) when the repository cannot be used.

Higher layers publish under a final name and write the manifest last: an object only
counts once its manifest exists (``remote.py``).

``MOVIE_BACKUP_REPO`` (or ``--to``) names one repository, or two separated by a comma
(every backup goes to both). Unset: ``MOVIE_BACKUP_DIR``. ``gs://`` and ``az://`` are
recognised and refused for now (the same obstore transport serves them later).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.backups.fileio import fsync_dir, make_private_dir, remove_path
from moviectl.core.backups.objects import BLOCK, DOCUMENT_LIMIT, ObjectInfo, Repository
from moviectl.infra.errors import InputFileError, UsageError
from moviectl.infra.files import open_regular, read_small

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

__all__ = [
    "BLOCK",
    "LocalRepository",
    "ObjectInfo",
    "Repository",
    "configured",
    "is_remote",
    "open_repository",
    "primary",
]
REMOTE_SCHEMES = ("s3://", "gs://", "az://", "azure://", "abfs://")


def is_remote(spec: str | Path) -> bool:
    return str(spec).startswith(REMOTE_SCHEMES)


def open_repository(spec: str | Path, settings: Settings | None = None) -> Repository:
    """The repository ``spec`` names: a directory path, or ``s3://bucket[/prefix]``."""
    text = str(spec).strip()
    if not text:
        raise UsageError("an empty backup repository", hint="a directory or s3://bucket/prefix")
    if text.startswith("s3://"):
        from moviectl.core.backups.s3 import S3Repository

        return S3Repository.from_url(text, settings)
    if is_remote(text):
        raise UsageError(
            f"{text.split('://')[0]}:// repositories are not supported yet",
            hint="use s3:// (any S3-compatible server) or a local directory",
        )
    return LocalRepository(Path(text))


def configured(settings: Settings, to: str | None = None) -> list[Repository]:
    """The repositories ``--to`` (else MOVIE_BACKUP_REPO, else the backup dir) names."""
    spec = to if to is not None else (settings.backup_repo or "")
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        return [LocalRepository(Path(settings.backup_dir))]
    if len(parts) > 2:
        raise UsageError("at most two backup repositories", hint="e.g. /srv/backups,s3://b/p")
    return [open_repository(p, settings) for p in parts]


def primary(settings: Settings, repo: str | None = None) -> Repository:
    """The repository read from (list, verify, restore, prune): the first configured."""
    return configured(settings, repo)[0]


class LocalRepository:
    """A directory; today's layout (the backup and its manifest side by side)."""

    remote = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def where(self, name: str) -> str:
        return str(self.root / name)

    def _path(self, name: str) -> Path:
        if not name or name.startswith(("/", ".")) or ".." in Path(name).parts:
            raise InputFileError(f"bad object name {name!r}")
        return self.root / name

    def check(self) -> None:
        make_private_dir(self.root)
        if not os.access(self.root, os.W_OK):
            raise InputFileError(f"backup directory {self.root} is not writable")

    def put(self, name: str, source: Path | Iterable[bytes]) -> int:
        from moviectl.core.backups.leftovers import partial_name

        final = self._path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(partial_name(final.name))
        n = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                if isinstance(source, Path):
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, fh, BLOCK)
                else:
                    for block in source:
                        fh.write(block)
                n = fh.tell()
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return n

    def stream(self, name: str) -> Iterator[bytes]:
        path = self._path(name)
        try:
            fh = os.fdopen(open_regular(path), "rb")
        except FileNotFoundError:
            raise InputFileError(f"backup not found: {path}") from None
        except OSError as exc:  # a FIFO or a directory under a backup's name
            raise InputFileError(f"cannot read {path}: {exc.strerror}") from None
        with fh:
            yield from iter(lambda: fh.read(BLOCK), b"")

    def get(self, name: str, dest: Path) -> int:
        with open(dest, "wb") as out:
            for block in self.stream(name):
                out.write(block)
            return out.tell()

    def read_bytes(self, name: str) -> bytes:
        try:
            return read_small(self._path(name), DOCUMENT_LIMIT)
        except FileNotFoundError:
            raise InputFileError(f"not found: {self.where(name)}") from None
        except OSError as exc:  # hostile: a FIFO, a directory, a huge file
            raise InputFileError(f"cannot read {self.where(name)}: {exc.strerror}") from None

    def write_bytes(self, name: str, data: bytes) -> None:
        self.put(name, [data])

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        found = []
        for p in sorted(self.root.iterdir()):
            if p.name.startswith(".") or not p.name.startswith(prefix) or not p.is_file():
                continue
            st = p.stat()
            found.append(ObjectInfo(p.name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC)))
        return found

    def stat(self, name: str) -> ObjectInfo | None:
        try:
            st = self._path(name).stat()
        except FileNotFoundError:
            return None
        return ObjectInfo(name, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, name: str) -> None:
        remove_path(self._path(name))
