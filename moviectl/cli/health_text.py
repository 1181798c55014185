"""The health report as lines of text: one layout for Rich (``render_health``) and for
``health --live`` (``cli/live.py``), which prints them without loading Rich."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moviectl.core.health.checks import HealthReport

# status: (Rich style, mark)
MARKS = {
    "pass": ("green", "✓"),
    "warn": ("yellow", "!"),
    "fail": ("red", "✗"),
    "skip": ("dim", "-"),
}


def plain(style: str, text: str) -> str:
    """No styling."""
    return text


def health_lines(r: HealthReport, paint: Callable[[str, str], str] = plain) -> list[str]:
    """The database, a line per check (name, status, latency, detail), the verdict
    (unhealthy names the first check that failed; degraded, with warnings only, the first
    that warned); ``paint(style, text)`` styles the marks and the verdict."""
    lines = [f"database: {r.url}"]
    for c in r.checks:
        style, mark = MARKS[c.status]
        lines.append(f"  {paint(style, mark)} {c.name:<11} {c.latency_ms:>7.1f} ms  {c.detail}")
    if r.pooler is not None:
        from moviectl.core.health.pooler import pooler_line

        lines.append(f"  {pooler_line(r.pooler)}")
    failing = r.failing
    if failing is None:
        verdict = paint("green", "healthy")
    elif r.status == "degraded":  # a warning only: still serving
        verdict = f"{paint('yellow', 'degraded')} ({failing})"
    else:
        failed = next(c.name for c in r.checks if c.status == "fail")
        verdict = f"{paint('red', 'unhealthy')} ({failed})"
    lines.append(f"{verdict} in {r.elapsed_ms:.0f} ms")
    return lines
