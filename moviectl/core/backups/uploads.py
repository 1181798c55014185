"""Multipart uploads a killed `backup --to s3://` left in the bucket: listed and aborted.

A backup streams into one multipart upload; ``kill -9`` mid-way leaves its parts in the
bucket, invisible to listings and restores but stored (and billed). obstore (0.12.1, the
newest release) has no public call for S3's ``ListMultipartUploads`` or for
``AbortMultipartUpload`` by upload id, so this goes through rclone (the ``s3-wal`` extra,
already PITR's S3 client): ``rclone backend list-multipart-uploads`` and ``rclone backend
cleanup -o max-age=…`` on one key. rclone gets no secret from moviectl: ``env_auth`` makes
it read the same ``AWS_*`` variables / credentials file moviectl reads; the endpoint,
region and bucket go in ``RCLONE_CONFIG_*`` variables, never argv.

An upload is aborted (``backup prune``; ``backup`` when it clears a dead run's marker)
only when its key is a backup name directly under the repository's prefix and either
- its ``NAME.inprogress`` marker names a process on this host that is gone (as
  ``leftovers.py`` judges a local ``.partial`` file: other hosts' processes are never
  judged), or
- it has no marker and began more than ``STALE`` ago: a backup writes its marker before
  the upload starts and removes it only after the upload ended, so an upload without one
  is nobody's in flight; the hour covers the moments between the two listings.
Anything else (a live owner, another host's, PITR's ``pitr/…`` uploads, other tools'
keys) is reported and left alone; a bucket lifecycle rule reclaims those.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.backups.leftovers import this_host
from moviectl.core.backups.manifest import FORMATS
from moviectl.infra.errors import MoviectlError, ToolMissing, Unreachable
from moviectl.infra.pgtools import popen_child
from moviectl.infra.processes import pid_alive

if TYPE_CHECKING:
    from moviectl.core.backups.objects import Repository
    from moviectl.core.backups.s3 import S3Repository

STALE = timedelta(hours=1)
LEFT_FOR = timedelta(days=1)  # a lifecycle rule (LIFECYCLE) would have reclaimed it by then
GONE = "its backup's process is gone"
INPROGRESS = ".inprogress"  # as remote.py names a running upload's marker
SUFFIXES = tuple(s for _, s in FORMATS.values())
INSTALL = "pip install 'moviectl[s3-wal]', which brings rclone"
LIFECYCLE = (
    "a bucket lifecycle rule (AbortIncompleteMultipartUpload after a day) reclaims them either way"
)


@dataclass
class LeftoverUpload:
    key: str  # relative to the repository's prefix
    url: str
    started: str  # ISO 8601, the server's clock
    size_bytes: int | None  # S3's listing of uploads does not give it
    abortable: bool
    reason: str
    action: str = "kept"  # kept | aborted | would abort | failed
    upload_id: str = ""
    owner_gone: bool = False  # its marker names a process on this host that is gone


@dataclass
class UploadsReport:
    uploads: list[LeftoverUpload]
    unchecked: str | None = None  # why they could not be listed (what to install)


@dataclass(frozen=True)
class Backlog:
    """What ``health`` and ``/metrics`` say of a bucket's unfinished uploads (``backlog``)."""

    total: int  # every one under the prefix, those in flight included
    left: int  # left behind: `backup prune` aborts them, or they began over LEFT_FOR ago
    abortable: int  # of those, the ones `backup prune` aborts
    oldest: float  # when the oldest of all began (Unix seconds; 0: none or unknown)
    oldest_left: float  # when the oldest left behind began (likewise)


def rclone() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).with_name("rclone"))
    if not Path(found).exists():
        raise ToolMissing(
            "leftover multipart uploads are listed and aborted with rclone, which is not installed",
            hint=f"{INSTALL}; {LIFECYCLE}",
        )
    return str(Path(found).resolve())


def _env(repo: S3Repository) -> dict[str, str]:
    """rclone's remote ``moviectl``: the endpoint and region; the keys it reads itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
    env.update(
        RCLONE_CONFIG_MOVIECTL_TYPE="s3",
        RCLONE_CONFIG_MOVIECTL_PROVIDER="Other",
        RCLONE_CONFIG_MOVIECTL_ENV_AUTH="true",
        RCLONE_CONFIG_MOVIECTL_ENDPOINT=repo.endpoint,
        RCLONE_CONFIG_MOVIECTL_REGION=os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
        RCLONE_CONFIG_MOVIECTL_FORCE_PATH_STYLE="true",
        RCLONE_CONFIG_MOVIECTL_NO_CHECK_BUCKET="true",
        # never HEAD the key: an existing object would widen the scope to its folder
        RCLONE_CONFIG_MOVIECTL_NO_HEAD_OBJECT="true",
    )
    return env


def _run(repo: S3Repository, *args: str) -> str:
    argv = [
        rclone(),
        "--config=",
        "--contimeout",
        f"{min(10.0, repo.wait):g}s",
        "--timeout",
        f"{repo.wait:g}s",
        "--retries",
        "1",
        "--low-level-retries",
        "2",
        "backend",
        *args,
    ]
    limit = 4 * repo.wait + 10  # its own timeouts end it sooner; this bounds the rest
    pipe = subprocess.PIPE
    # a child that dies with moviectl: a killed prune leaves no rclone behind
    with popen_child(argv, env=_env(repo), stdout=pipe, stderr=pipe, text=True) as proc:
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise Unreachable(f"rclone did not answer within {limit:g} s") from None
        except BaseException:  # SIGINT, SIGTERM: on the way out, never wait for it
            proc.kill()
            raise
    if proc.returncode != 0:
        why = _why(err)
        raise (Unreachable if why in _DOWN else MoviectlError)(f"rclone failed: {why}")
    return str(out)


_DOWN = ("nothing answers at the endpoint", "the endpoint did not answer")


def _why(stderr: str) -> str:
    """rclone's error, as a cause: never its text (which may quote a request)."""
    for word, cause in (
        ("NoSuchBucket", "no such bucket"),
        ("SignatureDoesNotMatch", "the credentials were refused"),
        ("InvalidAccessKeyId", "the credentials were refused"),
        ("AccessDenied", "access denied"),
        ("connection refused", _DOWN[0]),
        ("timeout", _DOWN[1]),
    ):
        if word.lower() in stderr.lower():
            return cause
    return "see `rclone backend list-multipart-uploads` for the cause"


def _pending(repo: S3Repository) -> list[tuple[str, str, str]]:
    """(key relative to the prefix, initiated, upload id) of every unfinished upload."""
    base = f"{repo.prefix}/" if repo.prefix else ""
    out = _run(repo, "list-multipart-uploads", f"moviectl:{repo.bucket}/{base}")
    found = []
    try:
        for uploads in (json.loads(out or "{}") or {}).values():
            for u in uploads or []:
                key = str(u.get("Key") or "")
                if key.startswith(base) and key != base:
                    when, upload_id = str(u.get("Initiated") or ""), str(u["UploadId"])
                    found.append((key[len(base) :], when, upload_id))
    except (ValueError, AttributeError, KeyError, TypeError):
        raise MoviectlError("rclone's list of uploads was unreadable") from None
    return sorted(found)


def _started(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def read_owner(repo: Repository, marker: str) -> tuple[int, str] | None:
    """(pid, host) an ``.inprogress`` marker names; ``None`` for anything garbled (deep
    JSON, an infinite or non-positive pid): a marker nobody can read proves nothing."""
    try:
        owner = json.loads(repo.read_bytes(marker))
        pid, host = int(owner["pid"]), str(owner["host"])
    except (MoviectlError, ValueError, KeyError, TypeError, RecursionError, OverflowError):
        return None
    return (pid, host) if pid > 0 else None


def _judge(repo: Repository, key: str, started: datetime | None, markers: set[str]) -> str:
    """Why the upload of ``key`` may be aborted (``""``: it may not)."""
    if "/" in key or not key.endswith(SUFFIXES):
        return ""
    if key + INPROGRESS in markers:
        owner = read_owner(repo, key + INPROGRESS)
        if owner is None:
            return ""
        pid, host = owner
        return GONE if host == this_host() and not pid_alive(pid) else ""
    if started is not None and datetime.now(UTC) - started > STALE:
        return f"no backup owns it and it began over {STALE.seconds // 3600} h ago"
    return ""


def _kept_because(repo: Repository, key: str, markers: set[str]) -> str:
    if "/" in key:
        return f"under {key.split('/', 1)[0]}/: not a backup's (PITR's own or another tool's)"
    if not key.endswith(SUFFIXES):
        return "not a name moviectl gives a backup"
    if key + INPROGRESS in markers:
        owner = read_owner(repo, key + INPROGRESS)
        if owner is None:
            return "its marker names no process: left for the lifecycle rule"
        if owner[1] != this_host():
            return f"its backup runs on {owner[1][:100]} (not judged from here)"
        return f"in progress: pid {owner[0]} on this host"
    return f"no backup owns it; aborted once it is {STALE.seconds // 3600} h old"


def find(repo: Repository, *, strict: bool = False) -> UploadsReport:
    """The unfinished multipart uploads under ``repo``'s prefix, each judged (nothing is
    changed). A directory has none; a missing rclone or a failed listing is a note
    (``strict``: raised, for `prune --uploads-only`, which has nothing else to do)."""
    from moviectl.core.backups.s3 import S3Repository

    if not isinstance(repo, S3Repository):
        return UploadsReport([])
    try:
        pending = _pending(repo)  # before the markers: a new upload's marker came first
        markers = {o.name for o in repo.list() if o.name.endswith(INPROGRESS)} if pending else set()
    except ToolMissing:
        if strict:
            raise
        return UploadsReport([], f"not checked: rclone is not installed ({INSTALL}); {LIFECYCLE}")
    except MoviectlError as exc:
        if strict:
            raise
        return UploadsReport([], f"not checked: {exc.message}; {LIFECYCLE}")
    found = []
    for key, initiated, upload_id in pending:
        started = _started(initiated)
        why = _judge(repo, key, started, markers)
        found.append(
            LeftoverUpload(
                key,
                repo.where(key),
                started.isoformat() if started else initiated,
                None,
                bool(why),
                why or _kept_because(repo, key, markers),
                upload_id=upload_id,
                owner_gone=why == GONE,
            )
        )
    return UploadsReport(found)


def backlog(report: UploadsReport, now: datetime | None = None) -> Backlog:
    """Count what ``find`` judged: an upload is left behind when `backup prune` would abort
    it (its owner is gone, or none owns it for STALE) or when it began over LEFT_FOR ago
    (another host's, PITR's or another tool's, which nothing here aborts). A running
    backup's upload is neither until then."""
    now = now or datetime.now(UTC)
    starts = {id(u): _started(u.started) for u in report.uploads}
    left = [
        u
        for u in report.uploads
        if u.abortable or ((t := starts[id(u)]) is not None and now - t > LEFT_FOR)
    ]

    def oldest(ups: list[LeftoverUpload]) -> float:
        times = [t.timestamp() for u in ups if (t := starts[id(u)]) is not None]
        return min(times, default=0.0)

    return Backlog(
        len(report.uploads),
        len(left),
        sum(u.abortable for u in left),
        oldest(report.uploads),
        oldest(left),
    )


def abort(repo: Repository, report: UploadsReport, *, dry_run: bool) -> UploadsReport:
    """Abort the abortable uploads of ``report`` (``dry_run``: say so, change nothing).
    Scoped to the one key (its name is unique) and to its age: rclone aborts nothing
    younger than the judgement allowed. A bucket that stops answering ends the round: the
    rest would each wait as long."""
    from moviectl.core.backups.s3 import S3Repository

    if not isinstance(repo, S3Repository):
        return report
    down = ""
    for u in report.uploads:
        if not u.abortable:
            continue
        if down:
            u.action, u.reason = "failed", f"{u.reason}; not tried: {down}"
            continue
        if dry_run:
            u.action = "would abort"
            continue
        age = 0 if u.owner_gone else int(STALE.total_seconds())
        target = f"moviectl:{repo.bucket}/{repo.key(u.key)}"
        try:
            if others := _sharing(repo, target, repo.key(u.key)):
                u.abortable, u.reason = False, f"{u.reason}; kept: {others}"
                continue
            _run(repo, "cleanup", "-o", f"max-age={age}s", target)
            u.action = "aborted"
            if u.owner_gone:  # its marker has proved what it had to
                repo.delete(u.key + INPROGRESS)
        except MoviectlError as exc:
            u.action, u.reason = "failed", f"{u.reason}; not aborted: {exc.message}"
            down = exc.message if isinstance(exc, Unreachable) else ""
    return report


def _sharing(repo: S3Repository, target: str, full_key: str) -> str:
    """Why ``cleanup`` on ``target`` would reach further than ``full_key`` (``""``: it
    would not). rclone aborts by key *prefix*: ``NAME.x`` or ``NAME/y`` would go too, so
    the uploads under it are listed afresh just before and any other key keeps it."""
    out = _run(repo, "list-multipart-uploads", target)
    try:
        keys = {str(u.get("Key") or "") for ups in json.loads(out or "{}").values() for u in ups}
    except (ValueError, AttributeError, TypeError):
        return "rclone's list of uploads was unreadable"
    if keys - {full_key}:
        return "another upload's key begins with its name, and rclone aborts by prefix"
    return ""


def abort_dead(repo: Repository, names: list[str]) -> None:
    """Abort the uploads of backups whose process is proven gone (``remote.py``'s
    cleanup calls this before it removes their markers). Best effort, never fails."""
    with contextlib.suppress(MoviectlError):
        report = find(repo)
        report.uploads = [u for u in report.uploads if u.key in names and u.abortable]
        abort(repo, report, dry_run=False)
