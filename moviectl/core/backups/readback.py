"""A finished dump, checked: read back by the pg_restore beside its pg_dump and hashed at
once, and which pg_restore can read it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.backups.fileio import sha256_of
from moviectl.infra.errors import CheckFailed
from moviectl.infra.pgtools import find_tool, run_child

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


def readability(fmt: str, dump_version: str, server_major: int) -> dict[str, Any]:
    """Which pg_restore reads this dump, and a note when pg_dump was newer than the server."""
    dump_major = int(dump_version.split(".")[0]) if dump_version[:1].isdigit() else server_major
    note = None
    if dump_major > server_major:
        note = (
            f"made with pg_dump {dump_major} (the server is PostgreSQL {server_major}; no "
            f"pg_dump {server_major} was found): "
            + (
                f"pg_restore {dump_major} or newer reads it, the server's own cannot"
                if fmt != "plain"
                else "its SQL may name settings the server does not know"
            )
        )
    return {"pg_restore_min_major": None if fmt == "plain" else dump_major, "note": note}


def read_back_and_hash(settings: Settings, path: Path, fmt: str, pg_dump: str) -> str:
    """Read the archive back and compute its sha256 at once (two cores, one pass of time)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(sha256_of, path)  # hashlib releases the GIL on big blocks
        read_back(settings, path, fmt, pg_dump)
        return digest.result()


def read_back(settings: Settings, path: Path, fmt: str, pg_dump: str | None = None) -> None:
    """``pg_restore --list`` must read the archive (plain: the dump's closing line).

    The pg_restore beside the ``pg_dump`` that wrote it (the same build reads its own
    archive format) when there is one, else the first found.
    """
    if fmt == "plain":
        with open(path, "rb") as fh:
            fh.seek(max(0, path.stat().st_size - 4096))
            if b"PostgreSQL database dump complete" not in fh.read():
                raise CheckFailed(f"{path.name}: the SQL dump is incomplete")
        return
    beside = Path(pg_dump).with_name("pg_restore") if pg_dump and os.path.isabs(pg_dump) else None
    tool = str(beside) if beside and beside.is_file() else find_tool("pg_restore", settings).path
    res = run_child([tool, "--list", str(path)], text=True)
    if res.returncode != 0:
        raise CheckFailed(
            f"pg_restore cannot read the backup {path.name}: "
            f"{(res.stderr.strip().splitlines() or ['?'])[-1]}"
        )
