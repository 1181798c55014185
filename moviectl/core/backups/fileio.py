"""Files of a backup: checksums, sizes, removal, progress type (atomic writes: infra/files)."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from moviectl.infra.files import fsync_dir as fsync_dir
from moviectl.infra.files import open_regular
from moviectl.infra.files import write_json_atomic as write_json_atomic

Progress = Callable[[int], None]  # bytes written so far


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with os.fdopen(open_regular(f), "rb") as fh:  # a FIFO would block a plain open
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def remove_path(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a file (or every file of a directory-format dump, and the directory) to disk.

    Cheap after a pg_dump 12+ that synced its own output; the container path streams
    through a pipe and needs it.
    """
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if path.is_dir():
        fsync_dir(path)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) if missing; the directory moviectl creates is 0700."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    for d in reversed(missing):  # every directory it makes, parents included
        d.mkdir(mode=0o700, exist_ok=True)
        d.chmod(0o700)
