"""The results of `db upgrade` and the phases it times."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Progress = Callable[[str], None]

METHODS = ("link", "clone", "copy", "dump", "swap")
# what each method leaves of the old cluster once the new server has started
ROLLBACK = {
    "copy": "possible until --finish (the old cluster is untouched)",
    "clone": "possible until --finish (the old cluster is untouched)",
    "dump": "possible until --finish (the old cluster is untouched)",
    "link": "impossible once the new server has started (both share the data files): "
    "the safety backup is the way back",
    "swap": "impossible once pg_upgrade starts moving the old cluster's files into the new "
    "one (the old cluster is taken apart): --rollback then restores the safety backup "
    "into a new cluster of the old major",
}


@dataclass
class Trap:
    name: str  # checksums | extensions | locale | prepared_transactions | replication_slots
    ok: bool
    detail: str
    fix: str = ""


@dataclass
class Phase:
    name: str
    seconds: float


@dataclass
class UpgradeResult:
    from_major: int
    to_major: int
    method: str
    dry_run: bool
    backup: str | None  # the safety backup (or, for a dry run, the backup it restored)
    phases: list[Phase] = field(default_factory=list)
    traps: list[Trap] = field(default_factory=list)
    verification: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    old_cluster: str | None = None
    rollback: str = ""
    seconds: float = 0.0
    next_steps: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    __json_extra__ = ("ok",)


@dataclass
class FinishResult:
    action: str  # finish | rollback
    from_major: int
    to_major: int
    removed: str | None
    detail: str


class Timer:
    """Times each phase and says when one starts."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or (lambda _msg: None)
        self.phases: list[Phase] = []
        self.started = time.monotonic()

    @contextmanager
    def phase(self, name: str, says: str) -> Iterator[None]:
        self.progress(says)
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phases.append(Phase(name, round(time.monotonic() - t0, 3)))

    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)
