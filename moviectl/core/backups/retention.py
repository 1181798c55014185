"""`moviectl backup prune`: retention as operators write it (keep-last N, and/or
grandfather-father-son: the newest backup of each of the last N days, ISO weeks, months,
as pgBackRest, Barman and restic count them).

Never deleted, whatever the policy: the newest verified backup, a pinned one
(`backup pin NAME`), the safety backup of an upgrade not yet finished (embedded or
Docker; after `--method swap` its `--rollback` has no other way back), and anything
without a manifest
(not moviectl's to judge). Every
decision carries its reasons, so `prune --dry-run` says what would go and why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import ExitCode, MoviectlError, ToolMissing, UsageError

if TYPE_CHECKING:
    from moviectl.core.backups.repository import Repository
    from moviectl.core.backups.uploads import LeftoverUpload
    from moviectl.infra.settings import Settings


@dataclass
class Policy:
    last: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @property
    def empty(self) -> bool:
        return not (self.last or self.daily or self.weekly or self.monthly)


@dataclass
class Decision:
    path: str
    created: str
    keep: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class PruneResult:
    repository: str
    dry_run: bool
    deleted: list[str]  # the paths deleted (with --dry-run: that would be)
    kept: list[Decision]
    decisions: list[Decision]
    # unfinished multipart uploads under the prefix (uploads.py): aborted, or why not
    leftover_uploads: list[LeftoverUpload] = field(default_factory=list)
    leftover_uploads_unchecked: str | None = None
    uploads_only: bool = False  # `--uploads-only`: no backup was looked at
    # each repository looked at and its outcome (`--uploads-only`: a fault is not the end)
    repositories: list[BucketOutcome] = field(default_factory=list)


@dataclass
class Candidate:
    path: str
    name: str
    created: datetime
    verified: bool
    pinned: bool
    upgrade: bool = False  # the safety backup a pending upgrade's --rollback needs


def plan(cands: list[Candidate], policy: Policy) -> list[Decision]:
    """Which to keep and why, newest first."""
    if policy.empty:
        raise UsageError(
            "no retention policy given",
            hint="--keep-last N and/or --keep-daily/--keep-weekly/--keep-monthly N",
        )
    newest = sorted(cands, key=lambda c: c.created, reverse=True)
    reasons: dict[str, list[str]] = {c.path: [] for c in newest}
    for i, c in enumerate(newest[: policy.last]):
        reasons[c.path].append(f"one of the last {policy.last}" if i else "the newest")
    buckets: list[tuple[str, int, Callable[[datetime], str]]] = [
        ("daily", policy.daily, lambda d: d.strftime("%Y-%m-%d")),
        ("weekly", policy.weekly, lambda d: f"{d.isocalendar()[0]}-W{d.isocalendar()[1]:02d}"),
        ("monthly", policy.monthly, lambda d: d.strftime("%Y-%m")),
    ]
    for label, n, key in buckets:
        seen: list[str] = []
        for c in newest:
            k = key(c.created)
            if k in seen or len(seen) >= n:
                continue
            seen.append(k)
            reasons[c.path].append(f"{label}: newest of {k}")
    verified = next((c for c in newest if c.verified), None)
    if verified is not None:
        reasons[verified.path].append("the newest verified backup")
    for c in newest:
        if c.pinned:
            reasons[c.path].append("pinned")
        if c.upgrade:
            reasons[c.path].append("the safety backup of an unfinished upgrade (its --rollback)")
    return [
        Decision(c.path, c.created.isoformat(), bool(reasons[c.path]), reasons[c.path])
        for c in newest
    ]


def prune_repository(
    settings: Settings, repo: Repository, policy: Policy, *, dry_run: bool
) -> PruneResult:
    from moviectl.core.backups.catalog import delete_backup, entries, pinned

    pins = pinned(repo)
    upgrades = _upgrade_backups(settings)
    cands = []
    for e in entries(settings, repo):
        if not e.manifest or not e.created:
            continue
        name = e.path.rstrip("/").rsplit("/", 1)[-1]
        created = datetime.fromisoformat(e.created)
        cands.append(
            Candidate(e.path, name, created, bool(e.verified_at), name in pins, name in upgrades)
        )
    decisions = plan(cands, policy)
    by_path = {c.path: c for c in cands}
    doomed = [d for d in decisions if not d.keep]
    for d in doomed:
        d.reasons = ["outside the policy"]
    if not dry_run:
        for d in reversed(doomed):  # the oldest first: a stop leaves the newer ones
            delete_backup(repo, by_path[d.path].name)
    left = abort_uploads(repo, dry_run=dry_run, alone=False)
    left.deleted, left.decisions = [d.path for d in doomed], decisions
    left.kept, left.uploads_only = [d for d in decisions if d.keep], False
    return left


def _upgrade_backups(settings: Settings) -> set[str]:
    """The names of the safety backups unfinished upgrades record: the embedded one's
    (``upgrade.json``) and each Docker project's (``docker-upgrade-<project>.json``), until
    ``--finish`` or a completed ``--rollback`` clears them. A Docker state moviectl did not
    write is refused (exit 5, naming it), as by `db up`: it might name the one to keep."""
    from moviectl.core.servers import docker_upgrade
    from moviectl.core.servers.upgrade_state import read_state

    data_dir = Path(settings.data_dir)
    states = [read_state(data_dir) or {}]
    for project in docker_upgrade.recorded_projects(data_dir):
        states.append(docker_upgrade.read_state(data_dir, project) or {})
    return {Path(str(s["backup"])).name for s in states if s.get("backup")}


def upload_repositories(settings: Settings, repo: str | None = None) -> list[Repository]:
    """Where `prune --uploads-only` looks: every configured repository that can hold
    multipart uploads (a bucket: MOVIE_BACKUP_REPO=/dir,s3://b/p looks in the bucket, not
    only in the first, which `backup prune` reads); with none, the first (it says it has
    none). ``repo`` (``--repo``) names the one(s) instead."""
    from moviectl.core.backups.repository import configured

    repos = configured(settings, repo)
    return [r for r in repos if r.remote] or repos[:1]


@dataclass
class BucketOutcome:
    """One repository `prune --uploads-only` looked at: its uploads, or why it could not
    look (``error``: the MoviectlError's ``to_dict``, which names the endpoint and bucket,
    never a key)."""

    repository: str
    ok: bool
    leftover_uploads: list[LeftoverUpload] = field(default_factory=list)
    leftover_uploads_unchecked: str | None = None
    error: dict[str, Any] | None = None


def abort_uploads_in(repos: list[Repository], *, dry_run: bool) -> PruneResult:
    """`prune --uploads-only` over ``repos`` (``upload_repositories``): every one is looked
    at, whatever another's fault, and has its outcome in ``repositories``; the merged
    result's ``repository`` names each. One repository alone: its fault is the error (as
    any prune's). No rclone is one error for all (exit 9): no bucket can be looked at."""
    from moviectl.core.backups import uploads

    if len(repos) > 1 and any(r.remote for r in repos):
        uploads.rclone()
    merged = PruneResult(", ".join(r.url for r in repos), dry_run, [], [], [], uploads_only=True)
    notes = []
    for repo in repos:
        try:
            one = abort_uploads(repo, dry_run=dry_run)
        except ToolMissing:
            raise
        except MoviectlError as exc:
            if len(repos) == 1:
                raise
            merged.repositories.append(BucketOutcome(repo.url, False, error=exc.to_dict()))
            continue
        merged.repositories += one.repositories
        merged.leftover_uploads += one.leftover_uploads
        notes += [one.leftover_uploads_unchecked] if one.leftover_uploads_unchecked else []
    merged.leftover_uploads_unchecked = "; ".join(notes) or None
    return merged


def uploads_exit_code(result: PruneResult) -> int:
    """`prune --uploads-only`'s exit code: a repository it could not look at has its own
    fault's (3 down or stalled, 4 keys refused, 2 no bucket; the first listed of several,
    as `backup` meets them), else 1 when an abort failed, else 0."""
    for outcome in result.repositories:
        if outcome.error is not None:
            return int(outcome.error.get("exit_code") or ExitCode.FAILED)
    if any(u.action == "failed" for u in result.leftover_uploads):
        return int(ExitCode.FAILED)  # its one job is not done
    return int(ExitCode.OK)


def abort_uploads(repo: Repository, *, dry_run: bool, alone: bool = True) -> PruneResult:
    """The leftover multipart uploads alone (`prune --uploads-only`, and every prune):
    aborted as ``uploads.py`` judges them; no backup is looked at or deleted. ``alone``
    (`--uploads-only`, its one job): a bucket that cannot be looked at is an error, as the
    listing makes it for any prune (exit 3 stalled or down, 4 keys refused, 2 no bucket)."""
    from moviectl.core.backups import uploads

    if alone and repo.remote:
        repo.check()  # one bounded listing page: obstore's errors, each with its exit code
    left = uploads.abort(repo, uploads.find(repo, strict=alone), dry_run=dry_run)
    looked = [BucketOutcome(repo.url, True, left.uploads, left.unchecked)]
    return PruneResult(repo.url, dry_run, [], [], [], left.uploads, left.unchecked, True, looked)
