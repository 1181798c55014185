"""The results every inspect subcommand returns, and the pick of a query by server major."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# how people see a column; JSON keeps the raw value (bytes as an int, seconds as a float)
Kind = Literal["text", "int", "bytes", "seconds", "pct", "sql"]

HIDDEN = "<insufficient privilege>"  # what pg_stat_activity/pg_stat_statements show instead


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"


@dataclass
class InspectResult:
    """One subcommand's answer: rows (dicts keyed by column), and notes for the reader
    (an estimate, a hidden query and the grant that reveals it, how to enable something)."""

    command: str
    title: str
    server_major: int
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    # set when the question cannot be answered here (pg_stat_statements missing): how to fix
    unavailable: str | None = None


@dataclass(frozen=True)
class Options:
    """What a person may tune in any subcommand (each uses what it needs)."""

    limit: int = 50
    min_seconds: float = 5.0  # long-running: shorter queries and transactions are left out


def by_major(variants: dict[int, str], major: int) -> str:
    """The query written for the highest major at or below ``major`` (the catalogs only
    gain columns from one major to the next, so an older variant fits until a newer one)."""
    fitting = [m for m in variants if m <= major]
    return variants[max(fitting)] if fitting else variants[min(variants)]


def cols(*spec: tuple[str, str] | tuple[str, str, Kind]) -> list[Column]:
    """Columns from ``(key, label[, kind])`` tuples."""
    return [Column(*s) for s in spec]
