"""Recovery targets: parsing `--to-time/--to-lsn/--to-name/--latest`, the base backup that
reaches one, and the one-line refusal (exit 2, with the recoverable range) when none can."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from moviectl.core.pitr.store import ArchiveFacts, BaseBackup, Mark, parse_lsn, recoverable_range
from moviectl.infra.errors import UsageError

LSN = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@dataclass
class Target:
    kind: str  # time | lsn | name | latest
    value: str | None = None

    def describe(self) -> str:
        return "the end of the archive" if self.kind == "latest" else f"{self.kind} {self.value}"

    def settings(self) -> dict[str, str]:
        """The recovery settings for postgresql.conf (values quoted)."""
        conf = {"recovery_target_action": "'promote'", "recovery_target_timeline": "'latest'"}
        if self.kind != "latest":
            conf[f"recovery_target_{self.kind}"] = quote(str(self.value))
        return conf


def quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``2026-12-02 14:04:59+00``); without an offset, this machine's time zone."""
    raw = text.strip()
    if re.search(r"[+-]\d\d$", raw):  # PostgreSQL's "+00": Python wants "+00:00"
        raw += ":00"
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise UsageError(
            f"not a time: {text!r}", hint='give one like "2026-12-02 14:04:59+00"'
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def parse(*, to_time: str | None, to_lsn: str | None, to_name: str | None, latest: bool) -> Target:
    given = [(k, v) for k, v in (("time", to_time), ("lsn", to_lsn), ("name", to_name)) if v]
    if len(given) + int(latest) != 1:
        raise UsageError(
            "give exactly one of --to-time, --to-lsn, --to-name, --latest",
            hint='e.g. moviectl restore --physical --to-time "2026-12-02 14:04:59+00"',
        )
    if latest:
        return Target("latest")
    kind, value = given[0]
    if kind == "time":
        return Target("time", parse_time(value).isoformat())
    if kind == "lsn" and not LSN.match(value):
        raise UsageError(f"not an LSN: {value!r}", hint="give one like 0/3000060")
    return Target(kind, value)


def choose(
    target: Target, bases: list[BaseBackup], facts: ArchiveFacts, marks: list[Mark]
) -> BaseBackup:
    """The newest base backup that ends before ``target``; refused when none does or when
    the archive ends before it."""
    if not bases:
        raise UsageError(
            "no physical base backup to restore from", hint="run `moviectl backup --physical`"
        )
    low, high = recoverable_range(bases, facts)
    span = f"recoverable range: {low} .. {high}"
    if target.kind == "latest":
        return bases[-1]
    if target.kind == "time":
        when = dt.datetime.fromisoformat(str(target.value))
        fits = [b for b in bases if dt.datetime.fromisoformat(b.finished_at) <= when]
        if not fits:
            raise _out_of_range(f"{target.value} is before the oldest base backup", span)
        if high is not None and when > dt.datetime.fromisoformat(high):
            raise _out_of_range(f"{target.value} is after the last archived WAL", span)
        return fits[-1]
    if target.kind == "name":
        found = [m for m in marks if m.name == target.value]
        if not found:
            names = ", ".join(m.name for m in marks[-5:]) or "none recorded"
            raise UsageError(
                f"no restore point named {target.value!r} (recent: {names})",
                hint='make one with `moviectl pitr mark "NAME"`',
            )
        lsn = parse_lsn(found[0].lsn)
    else:
        lsn = parse_lsn(str(target.value))
    fits = [b for b in bases if parse_lsn(b.end_lsn) <= lsn]
    lsns = f"{span} (LSN {bases[0].end_lsn} .. {facts.end_lsn or bases[-1].end_lsn})"
    if not fits:
        raise _out_of_range(f"{target.describe()} is before the oldest base backup", lsns)
    end = max([parse_lsn(b.end_lsn) for b in bases] + [parse_lsn(facts.end_lsn or "0/0")])
    if lsn > end:
        raise _out_of_range(f"{target.describe()} is after the last archived WAL", lsns)
    return fits[-1]


def _out_of_range(what: str, span: str) -> UsageError:
    return UsageError(f"cannot restore: {what}; {span}", hint="pick a target inside the range")
