"""Durable file writes: the one atomic writer (temp file beside, fsync, rename, fsync dir)."""

from __future__ import annotations

import errno
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from moviectl.infra.errors import MoviectlError, UsageError


def open_regular(path: Path, *, follow: bool = True) -> int:
    """Open ``path`` for reading, refusing anything but a regular file.

    Input moviectl did not make is hostile: a FIFO (or a device) under a backup's name
    would block a plain ``open`` forever, so it is opened non-blocking and checked first.
    Raises ``IsADirectoryError`` / ``OSError(EINVAL)`` for what is not a regular file;
    ``follow`` False: ``OSError(ELOOP)`` for a symlink (a file moviectl renames in itself
    is never one).
    """
    nofollow = 0 if follow else os.O_NOFOLLOW
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | nofollow)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_small(path: Path, limit: int, *, follow: bool = True) -> bytes:
    """A regular file's bytes, refusing one larger than ``limit`` (a document, not data)."""
    with os.fdopen(open_regular(path, follow=follow), "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data


def fsync_dir(path: Path) -> None:
    """Make a rename (or a new entry) in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, mode: int = 0o600, before_rename: Callable[[Path], None] | None = None
) -> None:
    """Write ``data`` beside ``path`` under a unique temp name, fsync, rename, fsync the dir.

    A reader sees the old file or the new one, never half of one; two writers never share
    a temp file; a failure (a full disk, a signal) leaves the old file and no temp file.
    ``mode`` is the file's, whatever the umask; ``before_rename`` gets the finished temp
    file (to hand it to another owner before it is visible under its name).
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically (0600)."""
    write_atomically(path, (json.dumps(data, indent=2) + "\n").encode())


# the path itself is wrong (the operator's to fix), not the disk failing under the write
_PATH_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


def write_user_file(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file the operator named (``--output``), its directories made if missing.

    A path that cannot be written is a usage error (exit 2); a write that fails on the
    way (full disk, I/O error) a failure (exit 1). One line either way, never a traceback.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        write_atomically(path, data, mode)
    except OSError as exc:
        kind = UsageError if exc.errno in _PATH_ERRORS else MoviectlError
        raise kind(f"cannot write {path}: {exc.strerror}") from None
