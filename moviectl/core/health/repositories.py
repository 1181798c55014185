"""The backup repositories, as ``health`` and ``/metrics`` see them.

Per repository (MOVIE_BACKUP_REPO: one or two; else the backup directory): whether it
answers, how many complete backups it holds, when the newest finished and when the newest
restore drill passed (from the manifests: a backup counts once its manifest exists). A
repository that does not answer within the bound (the connect timeout, twice; each request
of the S3 client is bounded by it too) is reported, never raised: ``health`` warns,
``/metrics`` reads ``moviectl_backup_repository_up 0``.

Manifests are cached by name, size and modification time, so ``/metrics`` lists a bucket
once per refresh and downloads only the manifests that are new or changed (a drill
rewrites its backup's manifest).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import ExitCode, InputFileError, MoviectlError

if TYPE_CHECKING:
    from moviectl.core.backups.objects import Repository
    from moviectl.infra.settings import Settings

MANIFEST = ".manifest.json"
_CACHE: dict[tuple[str, str], tuple[tuple[int, datetime], tuple[float, float]]] = {}
_LAST_GOOD: dict[str, RepoFacts] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class RepoFacts:
    repository: str  # its URL or directory (never a credential: those live in AWS_*)
    up: bool
    backups: int = 0
    last: float = 0.0  # Unix seconds; 0: none
    last_verified: float = 0.0
    error: str | None = None
    exit_code: int = 0  # the error's (3 unreachable, 4 credentials, 2 no bucket)
    # a bucket's unfinished multipart uploads (uploads.py); None: a directory, or not checked
    incomplete_uploads: int | None = None
    leftover_uploads: int | None = None  # left behind (uploads.backlog): a warning
    abortable_uploads: int | None = None  # of those, what `backup prune` aborts
    oldest_upload: float = 0.0  # when the oldest unfinished one began (Unix seconds; 0: none)
    oldest_leftover_upload: float = 0.0
    uploads_unchecked: str | None = None  # why they were not counted


def bound_of(settings: Settings) -> float:
    return 2.0 * float(settings.connect_timeout)


def read_repositories(
    settings: Settings, uploads_ttl: float = 0.0, *, manifests: bool = True
) -> list[RepoFacts]:
    """Every configured repository, each within the bound (read side by side); a bucket's
    unfinished uploads too, beside its listing (a count younger than ``uploads_ttl``
    seconds is reused: ``/metrics`` passes UPLOADS_TTL). ``manifests=False`` (``doctor``):
    the uploads alone, the listing not read (``up`` then says nothing)."""
    from moviectl.core.backups.repository import configured
    from moviectl.infra.conninfo import mask_locations

    quick = replace(settings, stall_timeout=float(settings.connect_timeout))
    try:
        repos = configured(quick)
    except MoviectlError as exc:  # a malformed MOVIE_BACKUP_REPO
        spec = mask_locations(settings.backup_repo or str(settings.backup_dir))
        return [RepoFacts(spec, False, error=exc.message, exit_code=int(exc.exit_code))]
    bound = bound_of(settings)
    found: list[RepoFacts | None] = [None] * len(repos)
    looked: list[dict[str, Any] | None] = [None] * len(repos)

    def read(i: int, repo: Repository) -> None:
        found[i] = _facts(repo)

    def look(i: int, repo: Repository) -> None:
        looked[i] = _uploads(repo, uploads_ttl)

    first = (read,) if manifests else ()
    threads = [
        threading.Thread(target=fn, args=(i, r), name="moviectl-repo", daemon=True)
        for i, r in enumerate(repos)
        for fn in ((*first, look) if r.remote else first)
    ]
    deadline = time.monotonic() + bound
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    out = []
    for repo, facts, uploads in zip(repos, found, looked, strict=True):
        if not manifests:
            facts = RepoFacts(repo.url, True)
        elif facts is None:  # still waiting: abandoned (its requests end within their bound)
            facts = down(repo.url, f"did not answer within {bound:g} s", 3)
        if repo.remote:
            why = f"not checked: no answer within {bound:g} s"
            late = {**_last_count(repo.url), "uploads_unchecked": why}
            facts = replace(facts, **{**_NO_UPLOADS, **(uploads or late)})
        out.append(facts)
    return out


_NO_UPLOADS: dict[str, Any] = {
    "incomplete_uploads": None,
    "leftover_uploads": None,
    "abortable_uploads": None,
    "oldest_upload": 0.0,
    "oldest_leftover_upload": 0.0,
    "uploads_unchecked": None,
}
_UPLOADS_BUSY: set[str] = set()
_UPLOADS_SEEN: dict[str, tuple[float, dict[str, Any]]] = {}
UPLOADS_TTL = 60.0  # /metrics refreshes every few seconds; one rclone run a minute will do


def _last_count(url: str) -> dict[str, Any]:
    """The last count this process made of ``url`` (none: ``{}``), kept while a new one
    fails or stalls, as ``down`` keeps the rest: a /metrics series does not vanish."""
    with _CACHE_LOCK:
        seen = _UPLOADS_SEEN.get(url)
    return dict(seen[1]) if seen is not None else {}


def _uploads(repo: Repository, ttl: float) -> dict[str, Any]:
    """The bucket's unfinished multipart uploads, counted (``RepoFacts``' upload fields):
    one look-up per repository at a time (a stalled one is not started again while it
    runs; its rclone ends within its own bound), reused for ``ttl`` seconds."""
    from moviectl.core.backups import uploads

    now = time.monotonic()
    last = _last_count(repo.url)
    with _CACHE_LOCK:
        seen = _UPLOADS_SEEN.get(repo.url)
        if seen is not None and now - seen[0] < ttl:
            return seen[1]
        if repo.url in _UPLOADS_BUSY:
            return {**last, "uploads_unchecked": "not checked: the previous look-up has not ended"}
        _UPLOADS_BUSY.add(repo.url)
    try:
        report = uploads.find(repo)
        if report.unchecked:
            return {**last, "uploads_unchecked": report.unchecked}
        b = uploads.backlog(report)
        fields: dict[str, Any] = {
            "incomplete_uploads": b.total,
            "leftover_uploads": b.left,
            "abortable_uploads": b.abortable,
            "oldest_upload": b.oldest,
            "oldest_leftover_upload": b.oldest_left,
        }
        with _CACHE_LOCK:
            _UPLOADS_SEEN[repo.url] = (now, fields)
        return fields
    except Exception as exc:  # never a traceback in a report or a scrape
        return {**last, "uploads_unchecked": f"not checked: {type(exc).__name__}"}
    finally:
        with _CACHE_LOCK:
            _UPLOADS_BUSY.discard(repo.url)


def _facts(repo: Repository) -> RepoFacts:
    try:
        objs = repo.list()
        if not objs and repo.remote:
            repo.check()  # an empty listing: is the bucket there at all?
        elif not objs and not Path(repo.url).is_dir():
            raise InputFileError(f"the backup directory {repo.url} does not exist")
        last = verified = 0.0
        n = 0
        for obj in objs:
            if not obj.name.endswith(MANIFEST):
                continue
            made, drilled = _times(repo, obj.name, (obj.size, obj.modified))
            n += made > 0
            last, verified = max(last, made), max(verified, drilled)
        facts = RepoFacts(repo.url, True, n, last, verified)
        with _CACHE_LOCK:
            _LAST_GOOD[repo.url] = facts
        return facts
    except MoviectlError as exc:
        return down(repo.url, exc.message, int(exc.exit_code))
    except Exception as exc:  # never a traceback in a report or a scrape
        return down(repo.url, type(exc).__name__, 1)


def down(url: str, error: str, code: int) -> RepoFacts:
    """Not answering: what it held when it last answered (in this process), marked down."""
    with _CACHE_LOCK:
        known = _LAST_GOOD.get(url) or RepoFacts(url, False)
    return replace(known, up=False, error=error, exit_code=code)


def _times(repo: Repository, name: str, version: tuple[int, datetime]) -> tuple[float, float]:
    """(finished, verified) of one manifest, cached by its size and time."""
    key = (repo.url, name)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    try:
        doc = json.loads(repo.read_bytes(name))
        times = (_ts(doc.get("finished_at")), _ts(doc.get("verified_at")))
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        times = (0.0, 0.0)  # unreadable: not a backup
    with _CACHE_LOCK:
        _CACHE[key] = (version, times)
    return times


def _ts(value: Any) -> float:
    if not isinstance(value, str):
        return 0.0
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def ago(ts: float, now: float) -> str:
    if not ts:
        return "never"
    s = max(0.0, now - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.1f} {unit} ago"
    return f"{s:.0f} s ago"


def repository_check(settings: Settings) -> tuple[str, str, int, dict[str, Any]]:
    """``health``'s ``backups`` check (status, detail, exit code, data): a repository
    that does not answer is a warning (``checks.WARN``), never a failure."""
    facts = read_repositories(settings)
    now = time.time()
    parts, down_, left = [], [], []
    for f in facts:
        if f.up:
            parts.append(
                f"{f.repository}: {f.backups} backups, newest {ago(f.last, now)}, "
                f"verified {ago(f.last_verified, now)}"
                + (f", uploads {f.uploads_unchecked}" if f.uploads_unchecked else "")
                + _flying(f)
            )
            if f.leftover_uploads:
                left.append(_leftover_line(f, now))
        else:
            down_.append(f"{f.repository}: {f.error}")
    data = {
        "repositories": [
            {
                **f.__dict__,
                "last_backup_age_seconds": round(now - f.last, 1) if f.last else None,
                "last_verified_age_seconds": (
                    round(now - f.last_verified, 1) if f.last_verified else None
                ),
                "oldest_leftover_upload_age_seconds": (
                    round(now - f.oldest_leftover_upload, 1) if f.oldest_leftover_upload else None
                ),
            }
            for f in facts
        ]
    }
    if down_:
        detail = "unreachable: " + "; ".join(down_) + (f" ({'; '.join(parts)})" if parts else "")
        return "warn", detail + "".join(f"; {x}" for x in left), int(ExitCode.FAILED), data
    if left:
        return "warn", "; ".join(left) + f" ({'; '.join(parts)})", int(ExitCode.FAILED), data
    return "pass", "; ".join(parts), 0, data


def _flying(f: RepoFacts) -> str:
    n = (f.incomplete_uploads or 0) - (f.leftover_uploads or 0)
    if not n:
        return ""
    return f", {n} unfinished upload{'s' if n != 1 else ''} running or too young to judge"


def _leftover_line(f: RepoFacts, now: float) -> str:
    """A bucket's left-behind multipart uploads: how many, how old, what cleans them."""
    from moviectl.core.backups.uploads import LIFECYCLE

    n, mine = f.leftover_uploads or 0, f.abortable_uploads or 0
    line = (
        f"{f.repository}: {n} incomplete multipart upload{'s' if n != 1 else ''} left behind "
        f"(stored and billed, never listed), the oldest began {ago(f.oldest_leftover_upload, now)}"
    )
    if mine:
        line += (
            f"; `moviectl backup prune --uploads-only --repo {f.repository}` aborts "
            f"{'it' if n == 1 else 'them' if mine == n else f'{mine} of them'}"
        )
    if mine < n:
        line += f"; {LIFECYCLE} (`moviectl backup list --repo {f.repository}` says why each stays)"
    return line


def add_repository_metrics(registry: Any, facts: list[RepoFacts] | None) -> None:
    """``moviectl_backup_repository_*``, one series per repository (none: left out)."""
    if facts is None:
        return
    from prometheus_client import Gauge

    label = ("repository",)
    series = (
        ("up", "1 when the backup repository answered its last listing, else 0"),
        ("backups", "Complete backups (with a manifest) in the repository"),
        (
            "last_backup_timestamp_seconds",
            "When the repository's newest backup finished (Unix time; 0: none or unknown)",
        ),
        (
            "last_verified_backup_timestamp_seconds",
            "When a restore drill of one of the repository's backups last passed (Unix time; "
            "0: never or unknown)",
        ),
    )
    gauges = {
        key: Gauge(f"moviectl_backup_repository_{key}", doc, label, registry=registry)
        for key, doc in series
    }
    uploads = (
        ("incomplete_uploads", "Unfinished multipart uploads under the repository's prefix"),
        (
            "leftover_uploads",
            "Unfinished multipart uploads left behind (their backup's process is gone, or "
            "they are over an hour old without an owner, or over a day old)",
        ),
        (
            "oldest_incomplete_upload_timestamp_seconds",
            "When the oldest unfinished multipart upload began (Unix time; 0: none)",
        ),
    )
    checked = [f for f in facts if f.incomplete_uploads is not None]  # a bucket, counted
    if checked:
        gauges |= {
            key: Gauge(f"moviectl_backup_repository_{key}", doc, label, registry=registry)
            for key, doc in uploads
        }
    for f in checked:
        gauges["incomplete_uploads"].labels(f.repository).set(f.incomplete_uploads or 0)
        gauges["leftover_uploads"].labels(f.repository).set(f.leftover_uploads or 0)
        key = "oldest_incomplete_upload_timestamp_seconds"
        gauges[key].labels(f.repository).set(f.oldest_upload)
    for f in facts:
        gauges["up"].labels(f.repository).set(1 if f.up else 0)
        gauges["backups"].labels(f.repository).set(f.backups)
        gauges["last_backup_timestamp_seconds"].labels(f.repository).set(f.last)
        gauges["last_verified_backup_timestamp_seconds"].labels(f.repository).set(f.last_verified)
