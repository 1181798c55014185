"""Timeline numbers a restore must not take, and the history files that keep them taken.

PostgreSQL names the timeline a restore ends on by probing the archive for history files
(``findNewestTimeLine``: ``N.history`` for N = the followed timeline + 1, + 2, ... until
one is missing) and takes the first number without one. A promote into the archive
uploads the new timeline's history file LAST (until it is there no restore follows a
timeline that was never swapped in), so a promote cut short and given up (`pitr
discard`) leaves segments of its timeline without a history file: the next restore would
take that number again, and its promote would be refused for those leftovers (different
bytes of the same names), leftovers nothing may delete (another host may be uploading
them right now).

So a restore that sees WAL of a timeline above the one it follows, with no history file
to account for it, (1) follows that timeline explicitly (``recovery_target_timeline``:
the very one PostgreSQL's ``latest`` follows: the same replay) and (2) answers the probe
for every number up to the highest one seen with a placeholder history file of its own
(``restore_command`` falls back to it when the archive has none), so PostgreSQL takes the
number after the highest one. Placeholders stay in the restore's directory: never in the
archive, never in ``pgdata``.

A promote of such a timeline then fills the gap below its number (PostgreSQL's probe
stops at the first missing history file: without that, a later ``latest`` restore would
stop below the promoted timeline) with tombstone history files, each uploaded only where
no history file is, only after the promoted timeline's own history file: comments only,
so following one explicitly is refused by PostgreSQL ("not a child of this server's
history"), and never the newest, so ``latest`` never follows one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from moviectl.infra.errors import Refused, UsageError

# a WAL file's timeline: a segment, its .partial, a .backup label, a history file
_WAL_NAME = re.compile(
    r"^([0-9A-F]{8})(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)$"
)
MAX_TAKEN = 64  # more unexplained timelines than this: a hostile or foreign archive
DIR = "timelines"


@dataclass
class Plan:
    follow: int  # what PostgreSQL's `latest` follows from the base backup's timeline
    start: int  # the base backup's timeline
    taken: list[int] = field(default_factory=list)  # above `follow`, up to the highest seen

    def target_timeline(self) -> str:
        """``recovery_target_timeline``: PostgreSQL's own ``latest`` unless numbers are
        taken (then that same timeline, named: ``latest`` would probe the placeholders)."""
        if not self.taken:
            return "'latest'"
        return "'current'" if self.follow == self.start else f"'{self.follow}'"


def history_name(tli: int) -> str:
    return f"{tli:08X}.history"


def timeline_of(name: str) -> int | None:
    m = _WAL_NAME.match(name)
    return int(m.group(1), 16) if m else None


def plan(names: Iterable[str], start: int) -> Plan:
    """From the archive's file names and the base backup's timeline ``start``."""
    have = set(names)
    follow = start
    while history_name(follow + 1) in have:  # findNewestTimeLine, on the listing
        follow += 1
    seen = [t for t in map(timeline_of, have) if t is not None]
    top = max(seen, default=follow)
    if top - follow > MAX_TAKEN:
        raise Refused(
            f"the WAL archive holds WAL of timeline {top} but history files only up to "
            f"timeline {follow}: {top - follow} timeline numbers unaccounted for, more "
            "than a cut-short promote leaves; nothing was restored",
            hint="look in the archive's wal/ for files another tool put there",
        )
    return Plan(follow, start, list(range(follow + 1, top + 1)))


def placeholder(tli: int) -> str:
    return (
        f"# moviectl: timeline {tli} is taken by WAL in the archive without a history\n"
        "# file (a promote cut short): a restore takes a number after it, never this one\n"
    )


def tombstone(tli: int) -> str:
    return (
        f"# moviectl: timeline {tli} was never promoted (its upload was cut short);\n"
        "# a later timeline's promote wrote this so that restores find that timeline.\n"
        "# Comments only: no restore can follow this timeline.\n"
    )


def gaps(names: Iterable[str], ours: int) -> list[int]:
    """Timeline numbers below ``ours`` (from 2) without a history file among ``names``."""
    have = set(names)
    return [t for t in range(2, ours) if history_name(t) not in have]


def install_placeholders(into: Path, taken: list[int]) -> None:
    """``into/<N>.history`` for each taken number (the server's to read)."""
    from moviectl.core.pitr.server import give_to_server

    into.mkdir(mode=0o700, exist_ok=True)
    for tli in taken:
        f = into / history_name(tli)
        f.write_text(placeholder(tli))
        give_to_server(f)
    give_to_server(into)


def with_fallback(command: str, into: Path) -> str:
    """``restore_command``, then the placeholders for what the archive lacks."""
    if set("'\"$`\\\n%") & set(str(into)):
        raise UsageError(
            f"the path {into} has a quote, $, `, % or \\ in it: it cannot go in restore_command",
            hint="choose a MOVIE_DATA_DIR without those characters",
        )
    # "&& test -f": the s3 script may exit 0 having fetched nothing (PostgreSQL then
    # finds no file and calls it missing): the placeholder must answer that case too
    return f'{{ {command} && test -f "%p"; }} || cp "{into}/%f" "%p"'
