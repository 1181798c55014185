"""Backups in any repository: list, stage for restore/verify, pin, delete, copy.

A remote backup is restored or drilled from a private staging directory under
MOVIE_BACKUP_DIR (``.<name>.<pid>@<host>.partial``, removed afterwards, and by the next
run when killed): downloaded (and decrypted) whole, so its checksum is checked before
anything is restored. ``path`` in every JSON document is the object's URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.backups.fileio import make_private_dir, remove_path
from moviectl.core.backups.leftovers import clean_partials, partial_name, this_host
from moviectl.core.backups.manifest import (
    FORMATS,
    BackupEntry,
    Manifest,
    VerifyResult,
    checked_fields,
    list_backups,
    manifest_path,
)
from moviectl.core.backups.objects import DOCUMENT_LIMIT, Repository
from moviectl.core.backups.remote import INPROGRESS, MANIFEST
from moviectl.core.backups.repository import LocalRepository, open_repository
from moviectl.infra.errors import CheckFailed, InputFileError, UsageError
from moviectl.infra.files import read_small

if TYPE_CHECKING:
    from moviectl.core.backups.restore import RestoreResult
    from moviectl.infra.settings import Settings

PIN = ".pin"
SUFFIXES = tuple(s for _, s in FORMATS.values())


def resolve(settings: Settings, ref: str, repo: str | None) -> tuple[Repository, str]:
    """A backup named on the command line: an object URL, or a name in ``--repo`` /
    MOVIE_BACKUP_REPO, or a local path."""
    from moviectl.core.backups.repository import configured, is_remote

    if is_remote(ref):
        base, _, name = ref.rstrip("/").rpartition("/")
        if base.endswith(":/"):
            raise UsageError(f"{ref} names a bucket, not a backup", hint="s3://BUCKET/PREFIX/NAME")
        return open_repository(base, settings), name
    if repo is not None or ("/" not in ref and configured(settings)[0].remote):
        return configured(settings, repo)[0], Path(ref).name
    path = Path(ref)
    return LocalRepository(path.parent), path.name


def read_manifest(repo: Repository, name: str) -> tuple[Manifest, dict[str, Any]]:
    where = Path(repo.where(name + MANIFEST))
    try:
        raw = json.loads(repo.read_bytes(name + MANIFEST))
    except InputFileError:
        raise InputFileError(
            f"backup not found: {repo.where(name)} (no manifest)",
            hint="`moviectl backup list` shows them",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InputFileError(f"the manifest {where} is unreadable") from None
    return Manifest(**checked_fields(raw, where)), raw  # type: ignore[arg-type]


def entries(settings: Settings, repo: Repository) -> list[BackupEntry]:
    """The backups in ``repo``, oldest first (the same shape as a directory's)."""
    from moviectl.core.backups.signing import state, verify_keys

    keys = verify_keys(settings)
    if isinstance(repo, LocalRepository):
        listed = list_backups(settings, repo.root)
        for e in listed:
            if e.manifest:
                with contextlib.suppress(OSError, ValueError, RecursionError):
                    doc = json.loads(read_small(manifest_path(Path(e.path)), DOCUMENT_LIMIT))
                    e.signature = state(keys, doc, Path(e.path).name)
        return listed
    objs = {o.name: o for o in repo.list()}
    found = []
    for name, obj in objs.items():
        if not name.endswith(SUFFIXES):
            continue
        if name + MANIFEST not in objs:
            if name + INPROGRESS not in objs:  # in progress or killed: not a backup
                found.append(BackupEntry(repo.where(name), None, obj.size, None, None, False))
            continue
        try:
            m, raw = read_manifest(repo, name)
        except InputFileError:
            found.append(BackupEntry(repo.where(name), None, obj.size, None, None, False))
            continue
        found.append(BackupEntry.of(repo.where(name), m, state(keys, raw, name)))
    found.sort(key=lambda e: e.created or "")
    return found


def pinned(repo: Repository) -> set[str]:
    return {o.name[: -len(PIN)] for o in repo.list() if o.name.endswith(PIN)}


def pin(settings: Settings, repo: Repository, name: str, on: bool = True) -> dict[str, Any]:
    """Pin a backup (retention never deletes it) or unpin it."""
    read_manifest(repo, name)  # only a complete backup can be pinned
    if on:
        stamp = {"pinned_at": datetime.now(UTC).isoformat()}
        repo.write_bytes(name + PIN, json.dumps(stamp).encode())
    else:
        repo.delete(name + PIN)
    return {"path": repo.where(name), "pinned": on}


def delete_backup(repo: Repository, name: str) -> None:
    """The manifest first: a half-deleted backup is no longer listed as one."""
    if isinstance(repo, LocalRepository):
        manifest_path(repo.root / name).unlink(missing_ok=True)
        remove_path(repo.root / name)
    else:
        repo.delete(name + MANIFEST)
        repo.delete(name)
    repo.delete(name + PIN)


@contextlib.contextmanager
def staged(settings: Settings, repo: Repository, name: str) -> Iterator[tuple[Path, str | None]]:
    """The backup as a local file beside its manifest (a directory's own, in place), and
    the sha256 of that file when it was computed on the way in (downloaded, not
    decrypted): the caller checks it against the manifest instead of reading it again."""
    if isinstance(repo, LocalRepository):
        yield repo.root / name, None
        return
    man, raw = read_manifest(repo, name)
    _import_driver_beside()
    home = Path(settings.backup_dir)
    make_private_dir(home)
    clean_partials(home)
    box = home / partial_name(name)
    box.mkdir(mode=0o700)
    try:
        local = box / name
        hashed = None
        if raw.get("encryption") == "age":
            from moviectl.core.backups.crypt import decrypt_file, identities

            keys = identities(settings)
            sealed = box / (name + ".age")
            _download(repo, name, sealed, raw.get("stored_sha256"))
            decrypt_file(sealed, local, keys)
            sealed.unlink()
        else:
            hashed = _download(repo, name, local, None)
        manifest_path(local).write_text(json.dumps(asdict(man)), encoding="utf-8")
        yield local, hashed
    finally:
        remove_path(box)


def _import_driver_beside() -> None:
    """psycopg imported in a thread while the download waits on the network: the restore
    or drill after it needs the driver, and its import is a tenth of a second of CPU."""
    import threading

    def load() -> None:
        with contextlib.suppress(Exception):
            import psycopg  # noqa: F401

    threading.Thread(target=load, name="import-psycopg", daemon=True).start()


def _download(repo: Repository, name: str, dest: Path, sha256: str | None) -> str:
    """``name`` into ``dest``, hashed as it arrives (checked when ``sha256`` is given);
    its sha256."""
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        for block in repo.stream(name):
            digest.update(block)
            out.write(block)
    if sha256 and digest.hexdigest() != sha256:
        raise CheckFailed(
            f"checksum mismatch for {repo.where(name)}: the stored object is corrupted or "
            "truncated",
            hint="do not restore it; use another backup (`moviectl backup list`)",
        )
    return digest.hexdigest()


def verify_in(settings: Settings, repo: Repository, name: str) -> VerifyResult:
    """The restore drill on a repository's backup; the outcome goes into its manifest."""
    from moviectl.core.backups.signing import check_backup
    from moviectl.core.backups.verify import verify

    check_backup(settings, repo, name)  # a forged manifest: refused, nothing recorded
    if isinstance(repo, LocalRepository):
        return verify(settings, repo.root / name)
    try:
        with staged(settings, repo, name) as (local, hashed):
            result = verify(settings, local, hashed)
            done = json.loads(manifest_path(local).read_text(encoding="utf-8"))
    except CheckFailed as exc:  # the stored object does not match: a failed drill
        result = VerifyResult(repo.where(name), False, None, False, False, [exc.message])
        done = {"verify_result": "mismatch"}
    _, raw = read_manifest(repo, name)
    raw["verified_at"] = done.get("verified_at", raw.get("verified_at"))
    raw["verify_result"] = done.get("verify_result")
    repo.write_bytes(name + MANIFEST, (json.dumps(raw, indent=2) + "\n").encode())
    result.path = repo.where(name)
    return result


def restore_from(
    settings: Settings,
    repo: Repository,
    name: str,
    *,
    into: str | None,
    force: bool,
    jobs: int | None,
) -> RestoreResult:
    from moviectl.core.backups.restore import restore
    from moviectl.core.backups.signing import check_backup

    check_backup(settings, repo, name)  # before anything is downloaded, created or dropped
    if isinstance(repo, LocalRepository):
        return restore(settings, repo.root / name, into=into, force=force, jobs=jobs)
    with staged(settings, repo, name) as (local, hashed):
        result = restore(settings, local, into=into, force=force, jobs=jobs, hashed=hashed)
    result.path = repo.where(name)
    result.manifest = repo.where(name + MANIFEST)
    return result


def copy(settings: Settings, src: Repository, name: str, dest: Repository) -> dict[str, Any]:
    """Copy a backup to another repository, checked on the way, manifest last."""
    from moviectl.core.backups.signing import check_backup

    check_backup(settings, src, name)
    man, raw = read_manifest(src, name)
    if isinstance(src, LocalRepository) and (src.root / name).is_dir():
        raise UsageError(
            f"{name} is a directory-format backup: it cannot be copied as one object",
            hint="back up with --format custom to copy it",
        )
    if dest.stat(name + MANIFEST) is not None:
        raise UsageError(f"{dest.where(name)} already exists")
    want = raw.get("stored_sha256") or man.sha256
    stored = src.stat(name)  # stored as dumped: its size is known, and a wrong one fails now
    if not raw.get("stored_sha256") and man.size_bytes and stored and stored.size != man.size_bytes:
        raise CheckFailed(
            f"checksum mismatch for {src.where(name)}: not copied "
            f"({stored.size} bytes, the manifest says {man.size_bytes})",
            hint="the source is corrupted; copy another backup",
        )
    digest = hashlib.sha256()

    def blocks() -> Iterator[bytes]:
        for block in src.stream(name):
            digest.update(block)
            yield block
        if digest.hexdigest() != want:
            raise CheckFailed(
                f"checksum mismatch for {src.where(name)}: not copied",
                hint="the source is corrupted; copy another backup",
            )

    dest.check()
    # whose upload this is: a killed copy's multipart upload is then judged as a backup's
    owner = {"copy": src.url, "pid": os.getpid(), "host": this_host()}
    marker = json.dumps(owner).encode()
    if dest.remote:
        dest.write_bytes(name + INPROGRESS, marker)
    try:
        size = dest.put(name, blocks())
        dest.write_bytes(name + MANIFEST, (json.dumps(raw, indent=2) + "\n").encode())
    except BaseException:
        with contextlib.suppress(Exception):
            dest.delete(name)
            dest.delete(name + INPROGRESS)
        raise
    if dest.remote:
        dest.delete(name + INPROGRESS)
    return {"path": dest.where(name), "source": src.where(name), "size_bytes": size}


def backup_everywhere(
    settings: Settings,
    to: str | None,
    *,
    output: Path | None,
    fmt: str,
    jobs: int | None,
    compress: str | None,
    progress: Any,
) -> Any:
    """`moviectl backup [--to REPO[,REPO2]]`: into the first repository, then a checked
    copy into the second (pgBackRest's repo1/repo2)."""
    from moviectl.core.backups import dump, remote
    from moviectl.core.backups.repository import configured

    if output is not None:
        repos: list[Repository] = [LocalRepository(output)]
    else:
        repos = configured(settings, to)
    first = repos[0]
    for other in repos[1:]:  # an unreachable second repository fails (exit 3) before pg_dump
        other.check()
    if isinstance(first, LocalRepository):
        chosen = output is not None or bool(to or settings.backup_repo)
        if chosen and output is None:
            make_private_dir(first.root)
        result = dump.backup(
            settings,
            output=first.root if chosen else None,
            fmt=fmt,
            jobs=jobs,
            compress=compress,
            progress=progress,
        )
    else:
        result = remote.backup_to(settings, first, fmt=fmt, compress=compress, progress=progress)
    name = result.manifest.file
    for other in repos[1:]:
        try:
            result.copies.append(copy(settings, first, name, other)["path"])
        except Exception as exc:
            if hasattr(exc, "message"):
                exc.message = f"{result.path} was written, but its copy failed: {exc.message}"
            raise
    return result
