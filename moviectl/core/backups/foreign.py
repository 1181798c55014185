"""A pg_dump file made elsewhere (no moviectl manifest beside it), checked before a restore.

What can be checked is: which of pg_dump's four formats it is (custom, directory, tar, plain
SQL), that the newest local pg_restore reads the whole archive (``--list``, then every data
block into ``/dev/null``: a truncated or damaged file is refused before anything is
created), the PostgreSQL major it was dumped from (its header), and for plain SQL that it is
complete and switches to no other database. What cannot be checked (a checksum, the row
counts it should hold) is why such a restore says it is unverified.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.backups.manifest import Manifest, check_checksum, load_manifest, manifest_path
from moviectl.core.backups.sqlguard import lines_of
from moviectl.infra.errors import CheckFailed, InputFileError, Refused
from moviectl.infra.pgtools import Tool, candidates, first_error, run_child, tool_version

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

_FROM = re.compile(r"Dumped from database version:? (\d+)(?:\.(\d+))?")
_BY = re.compile(r"Dumped by pg_dump version:? ((\d+)(?:\.\d+)*)")
_DBNAME = re.compile(r"^;\s+dbname: (\S+)", re.M)
_ARCHIVE_VERSION = re.compile(r"unsupported version \(([\d.]+)\) in file header")
_CONNECT = re.compile(rb"^\\(?:connect|c)(?:\s|$)")
UNVERIFIED = "made elsewhere (no moviectl manifest): no checksum or row counts to check it against"


def read_backup(settings: Settings, path: Path, hashed: str | None = None) -> tuple[Manifest, bool]:
    """The manifest (checksum checked; ``hashed``: the file's sha256 computed as it was
    downloaded), or one inferred from a foreign file; and whether the file has a manifest
    of its own."""
    if path.exists() and not (path.is_file() or path.is_dir()):  # opening a FIFO would wait
        raise InputFileError(
            f"{path} is not a regular file (a FIFO, socket or device): nothing restored",
            hint="restore the file itself: copy a streamed dump to a file first",
        )
    if manifest_path(path).exists() or not path.exists():
        man = load_manifest(path)  # a missing file: its "backup not found"
        check_checksum(path, man, hashed)
        return man, True
    return inspect(settings, path), False


def dump_format(path: Path) -> str:
    """custom | directory | tar | plain, from the file itself; anything else is refused."""
    if path.is_dir():
        if not (path / "toc.dat").is_file():
            raise InputFileError(
                f"{path} is a directory without toc.dat: not a pg_dump directory-format backup",
                hint="name the directory pg_dump -Fd wrote (the one holding toc.dat)",
            )
        for entry in path.iterdir():  # pg_restore would wait on a FIFO, read a device for ever
            if not entry.is_file():
                raise InputFileError(
                    f"{entry} is not a regular file: not a pg_dump directory-format backup",
                    hint="pg_dump -Fd writes only files: restore another copy",
                )
        return "directory"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PGDMP"):
        return "custom"
    if head[257:262] == b"ustar":
        return "tar"
    if b"PostgreSQL database dump" in head:
        return "plain"
    hint = "restore a file pg_dump wrote (-Fc, -Fd, -Ft or -Fp)"
    if head.startswith((b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\x04\x22\x4d\x18")):
        hint = "it is compressed: decompress it first (gunzip / zstd -d / lz4 -d)"
    raise InputFileError(
        f"{path.name} is not pg_dump output (custom, directory, tar or SQL)", hint=hint
    )


def newest_pg_restore(settings: Settings) -> Tool:
    tools = [t for t in (tool_version(p) for p in candidates("pg_restore", settings)) if t]
    if not tools:
        from moviectl.infra.pgtools import find_tool

        return find_tool("pg_restore", settings)  # raises ToolMissing with its hint
    return max(tools, key=lambda t: t.major)


def inspect(settings: Settings, path: Path) -> Manifest:
    fmt = dump_format(path)
    header = _plain_header(path) if fmt == "plain" else _archive_header(settings, path)
    from_major = _FROM.search(header)
    by = _BY.search(header)
    dbname = _DBNAME.search(header)
    server_major = int(from_major.group(1)) if from_major else 0
    dump_version = by.group(1) if by else ""
    return Manifest(
        file=path.name,
        format=fmt,
        sha256="",
        size_bytes=0,
        database=dbname.group(1) if dbname else "restored",
        server_version=from_major.group(0).rsplit(" ", 1)[-1] if from_major else "",
        server_major=server_major,
        pg_dump_version=dump_version,
        alembic_revision=None,
        row_counts={},
        started_at="",
        finished_at="",
        seconds=0,
        pg_restore_min_major=None if fmt == "plain" or not by else int(by.group(2)),
        note=UNVERIFIED,
    )


def _archive_header(settings: Settings, path: Path) -> str:
    """``pg_restore --list`` (the header and TOC), then every data block read: all of it
    must be readable by the newest pg_restore here."""
    tool = newest_pg_restore(settings)
    arg = str(path.absolute())  # "-v.dump" would be read as options
    listed = run_child([tool.path, "--list", arg], text=True)
    if listed.returncode != 0:
        newer = _ARCHIVE_VERSION.search(listed.stderr)
        if newer:
            raise Refused(
                f"{path.name} was written by a pg_dump newer than the tools here read "
                f"(archive version {newer.group(1)}; the newest pg_restore here is "
                f"{tool.version})",
                hint="install newer PostgreSQL client tools, or set MOVIE_PG_BIN_DIR",
            )
        raise CheckFailed(
            f"pg_restore cannot read {path.name}: {first_error(listed.stderr)}; nothing restored",
            hint="the file is damaged or not a pg_dump archive: restore another copy",
        )
    full = run_child([tool.path, "-f", "/dev/null", arg], text=True)
    if full.returncode != 0:
        raise CheckFailed(
            f"{path.name} is damaged or truncated (pg_restore: {first_error(full.stderr)}); "
            "nothing restored",
            hint="restore another copy of the backup",
        )
    return str(listed.stdout)


def _plain_header(path: Path) -> str:
    """The SQL's header comments; the file must end as pg_dump ends it and switch to no
    other database (``\\connect``: a dump made with --create)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        fh.seek(max(0, size - 4096))
        if b"PostgreSQL database dump complete" not in fh.read():
            raise CheckFailed(
                f"{path.name}: the SQL dump is incomplete (truncated?); nothing restored",
                hint="restore another copy of the backup",
            )
        fh.seek(0)
        head = fh.read(8192).decode("utf-8", errors="replace")
        fh.seek(0)
        whole = True  # a piece of a line longer than MAX_LINE starts no line
        for n, line in enumerate(lines_of(fh), 1):
            if whole and _CONNECT.match(line):
                raise Refused(
                    f"{path.name} line {n}: \\connect switches to another database (a dump "
                    "made with pg_dump --create): refusing to restore it",
                    hint="dump again without --create (-C), or with -Fc, and restore that",
                )
            whole = line.endswith(b"\n")
    return head
