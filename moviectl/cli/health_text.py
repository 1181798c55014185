"""The health report as lines of text: one layout for Rich (``render_health``) and for the
fast path in ``entry.py``, which prints it plain without importing Rich.

Standard library only: ``moviectl health --live`` loads this on its hot path.
"""

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
    """No styling: what Rich prints where there is no terminal."""
    return text


def health_lines(r: HealthReport, paint: Callable[[str, str], str] = plain) -> list[str]:
    """The report's lines; ``paint(style, text)`` styles the marks and the verdict."""
    lines = [f"database: {r.url}"]
    for c in r.checks:
        style, mark = MARKS[c.status]
        lines.append(f"  {paint(style, mark)} {c.name:<11} {c.latency_ms:>7.1f} ms  {c.detail}")
    verdict = paint("green", "healthy") if r.ok else f"{paint('red', 'unhealthy')} ({r.failing})"
    lines.append(f"{verdict} in {r.elapsed_ms:.0f} ms")
    return lines
