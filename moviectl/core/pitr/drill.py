"""`backup verify --physical` (the restore drill) and `pitr prune` (retention).

The drill restores the newest base backup and every archived segment into a throwaway
cluster, counts the rows of every table, compares them with the running server when it
answers, and records the result and the recovery time in the base backup's meta.json.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

from moviectl.core.pitr.chain import needed
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.restore import discard, restore
from moviectl.core.pitr.store import archive_facts, parse_lsn, segment_name
from moviectl.core.pitr.targets import Target
from moviectl.infra.errors import MoviectlError, UsageError
from moviectl.infra.settings import Settings


@dataclass
class DrillResult:
    ok: bool
    base_backup: str
    recovered_to: str | None
    recovery_seconds: float
    row_counts: dict[str, int]
    problems: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)


def drill(settings: Settings, *, timeout: float = 600) -> DrillResult:
    store = store_of(settings)
    bases = store.bases()
    if not bases:
        raise UsageError("no physical base backup to verify", hint="moviectl backup --physical")
    newest = bases[-1]
    facts = archive_facts(store)
    problems = [f"archive gap: segment {g} is missing" for g in facts.gaps]
    name = f"drill-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    started = time.monotonic()
    counts: dict[str, int] = {}
    reached = None
    try:
        result = restore(settings, Target("latest"), name=name, timeout=timeout)
        counts, reached = result.row_counts, result.recovered_to
        discard(settings, name)
    except MoviectlError as exc:
        problems.append(f"restore failed: {exc.message}")
    seconds = round(time.monotonic() - started, 3)
    ok = not problems
    newest.drill = {
        "at": dt.datetime.now(dt.UTC).isoformat(),
        "ok": ok,
        "recovery_seconds": seconds,
        "recovered_to": reached,
        "row_counts": counts,
        "problems": problems,
    }
    store.save_meta(newest)
    return DrillResult(ok, newest.id, reached, seconds, counts, problems, facts.gaps)


@dataclass
class PruneResult:
    kept: list[str]
    deleted_base_backups: list[str]
    deleted_wal: int
    oldest_needed_segment: str | None
    deleted_unfinished: list[str] = field(default_factory=list)  # s3: uploads never listed


def prune(settings: Settings, keep: int) -> PruneResult:
    """Keep the newest ``keep`` base backups, the ones their incremental chains need, and
    every WAL file any of them needs (from the oldest kept one's start segment on, every
    timeline); delete the rest."""
    store = store_of(settings)
    bases = store.bases()
    # an incremental backup kept keeps its whole chain down to a full one
    kept = needed(bases[-keep:] if keep else [], bases)
    doomed = [b for b in bases if b not in kept]
    for b in reversed(doomed):  # children first: a killed prune leaves no orphaned increment
        store.remove_base(b.id)
    oldest = kept[0] if kept else None
    cut = None
    removed: list[str] = []
    if oldest is not None:
        cut = segment_name(oldest.timeline, parse_lsn(oldest.start_lsn), oldest.segment_size)
        for w in store.wal_files():
            if w.name.endswith(".history"):
                continue  # tiny, and every later restore may need them
            if len(w.name) >= 24 and w.name[8:24] < cut[8:24]:
                removed.append(w.name)
        store.remove_wal(removed)
    result = PruneResult([b.id for b in kept], [b.id for b in doomed], len(removed), cut)
    if hasattr(store, "remove_unfinished"):
        result.deleted_unfinished = store.remove_unfinished()
    return result
