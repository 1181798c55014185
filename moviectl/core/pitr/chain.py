"""Incremental base backups (PostgreSQL 17+): the parent to take one against, the chain
that restores one, and rebuilding that chain into a data directory with pg_combinebackup.

An incremental backup (``pg_basebackup --incremental=<parent's backup_manifest>``) holds
only the blocks changed since its parent, so it restores only with every ancestor down to
a full one. The chain is checked before a restore writes anything: every member listed
(``meta.json``), of one cluster (the manifests' System-Identifier), each one passing
``pg_verifybackup`` — a missing or tampered member is one line and exit 1. Retention
keeps the ancestors of every kept backup (``needed``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from moviectl.core.pitr.store import BaseBackup
from moviectl.infra.errors import CheckFailed, MoviectlError, UsageError
from moviectl.infra.pgtools import find_tool, first_error, run_child
from moviectl.infra.settings import Settings

MIN_MAJOR = 17  # pg_basebackup --incremental, summarize_wal, pg_combinebackup


def manifest_path(base: BaseBackup) -> Path:
    """Where ``base``'s backup_manifest is (tar: beside the tars; plain: in ``data``)."""
    src = Path(base.path)
    return src / "data" / "backup_manifest" if (src / "data").is_dir() else src / "backup_manifest"


def system_id(base: BaseBackup) -> int | None:
    """The cluster the backup is of (manifest version 2, PostgreSQL 17+), or None."""
    try:
        data = json.loads(manifest_path(base).read_text())
    except (OSError, ValueError):
        return None
    sid = data.get("System-Identifier")
    return int(sid) if sid is not None else None


def pick_parent(bases: list[BaseBackup], server_system_id: int, major: int) -> BaseBackup | None:
    """The newest verified base backup of this very cluster and major, or None."""
    fits = [
        b
        for b in bases
        if b.verified and b.server_major == major and system_id(b) == server_system_id
    ]
    return fits[-1] if fits else None


def chain_of(base: BaseBackup, bases: list[BaseBackup]) -> list[BaseBackup]:
    """``base`` and its ancestors, the full one first; refused when one is not listed."""
    by_id = {b.id: b for b in bases}
    chain = [base]
    while chain[0].parent is not None:
        parent = by_id.get(chain[0].parent)
        if parent is None or parent in chain:
            raise CheckFailed(
                f"cannot restore {base.id}: the base backup it is incremental to, "
                f"{chain[0].parent}, is missing from the repository; nothing was written",
                hint="restore to a time before it or from another full backup "
                "(`moviectl pitr status` lists them); take a full one: moviectl backup --physical",
            )
        chain.insert(0, parent)
    return chain


def needed(kept: list[BaseBackup], bases: list[BaseBackup]) -> list[BaseBackup]:
    """``kept`` and every ancestor one of them needs, oldest first."""
    ids: set[str] = set()
    for b in kept:
        try:
            ids.update(x.id for x in chain_of(b, bases))
        except MoviectlError:
            ids.add(b.id)  # a broken chain: keep what there is, never widen the damage
    return [b for b in bases if b.id in ids]


def check(settings: Settings, chain: list[BaseBackup], always: bool = False) -> None:
    """Every member of one cluster, and verified again now (a tampered file, a changed
    manifest): before anything is written. One member alone (a full backup) is checked
    only ``always`` (downloaded from object storage)."""
    if len(chain) < 2 and not always:
        return
    ids = {system_id(b) for b in chain}
    if len(chain) > 1 and (len(ids) != 1 or None in ids):
        raise CheckFailed(
            f"cannot restore {chain[-1].id}: its chain ({', '.join(b.id for b in chain)}) "
            "mixes clusters or lost a manifest; nothing was written",
            hint="restore from another base backup (`moviectl pitr status`)",
        )
    verify = find_tool(
        "pg_verifybackup", settings, min_major=MIN_MAJOR, prefer_major=chain[-1].server_major
    )
    for b in chain:
        src = Path(b.path)
        made = src / "data" if (src / "data").is_dir() else src
        # meta.json is moviectl's, beside the tars
        argv = [verify.path, *([] if made != src else ["-n", "-i", "meta.json"]), str(made)]
        _run(argv, f"chain member {b.id} failed pg_verifybackup", "nothing was written")


def combine(settings: Settings, chain: list[BaseBackup], pgdata: Path, work: Path) -> None:
    """The chain's members unpacked under ``work``, combined into ``pgdata`` (which must
    not exist), the result verified with its WAL; ``work`` removed in any case."""
    tool = find_tool(
        "pg_combinebackup", settings, min_major=MIN_MAJOR, prefer_major=chain[-1].server_major
    )
    verify = find_tool(
        "pg_verifybackup", settings, min_major=MIN_MAJOR, prefer_major=chain[-1].server_major
    )
    work.mkdir(mode=0o700)
    try:
        dirs = [_unpacked(b, work / f"{i:03d}") for i, b in enumerate(chain)]
        argv = [tool.path, *map(str, dirs), "-o", str(pgdata)]
        # no fsync: the restore is listed only after its server started, and a server
        # starting from a backup_label syncs the whole data directory first
        argv.append("--no-sync")
        if tool.major >= 18:
            argv.append("--link")  # hard links, not copies: the inputs are removed below
        _run(argv, "pg_combinebackup failed", "the partial restore was removed")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _run([verify.path, str(pgdata)], "the combined backup failed pg_verifybackup", "removed")


def _unpacked(base: BaseBackup, into: Path) -> Path:
    """A plain-format directory of ``base`` (pg_combinebackup reads no tar files)."""
    src = Path(base.path)
    if (src / "data").is_dir():
        return src / "data"  # plain already: read in place, never written
    into.mkdir(mode=0o700)
    for name, sub in (("base.tar", into), ("pg_wal.tar", into / "pg_wal")):
        sub.mkdir(mode=0o700, exist_ok=True)
        found = sorted(src.glob(f"{name}*"))
        if not found:
            raise CheckFailed(f"base backup {base.id} has no {name}", hint="take a new one")
        with tarfile.open(found[0], "r:*") as tf:
            tf.extractall(sub, filter="tar")
    shutil.copyfile(src / "backup_manifest", into / "backup_manifest")
    return into


def _run(argv: list[str], what: str, after: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    res = run_child(argv, env=env, stdin=subprocess.DEVNULL, text=True)
    if res.returncode != 0:
        message = first_error(res.stderr or "", f"exited {res.returncode}")
        raise CheckFailed(f"{what}: {message}; {after}", hint="`moviectl pitr status` lists them")


def not_supported(major: int) -> UsageError:
    return UsageError(
        f"incremental base backups need PostgreSQL {MIN_MAJOR} or newer; the server is {major}",
        hint="take a full one: moviectl backup --physical",
    )
