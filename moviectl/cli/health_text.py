"""The health report as lines of text: one layout for Rich (``render_health``) and for the
fast path in ``entry.py``, which prints it plain without importing Rich.

Standard library only, and not even ``typing``: ``moviectl health --live`` loads this on its
hot path, where the report is its JSON document (no ``HealthReport``: that is a dataclass).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~7 ms)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

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
    checks = [(c.name, c.status, c.latency_ms, c.detail) for c in r.checks]
    return report_lines(r.url, checks, r.failing, r.elapsed_ms, paint)


def doc_lines(doc: Mapping[str, Any]) -> list[str]:
    """``health_lines`` of a report in its JSON form (the fast path's), unstyled."""
    checks = [(c["name"], c["status"], c["latency_ms"], c["detail"]) for c in doc["checks"]]
    failing = next((c[0] for c in checks if c[1] in ("fail", "warn")), None)
    return report_lines(doc["url"], checks, failing, doc["elapsed_ms"])


def report_lines(
    url: str,
    checks: list[tuple[str, str, float, str]],
    failing: str | None,
    elapsed_ms: float,
    paint: Callable[[str, str], str] = plain,
) -> list[str]:
    """The lines: the database, a line per check (name, status, latency, detail), the
    verdict (unhealthy names the first check that failed or warned)."""
    lines = [f"database: {url}"]
    for name, status, latency_ms, detail in checks:
        style, mark = MARKS[status]
        lines.append(f"  {paint(style, mark)} {name:<11} {latency_ms:>7.1f} ms  {detail}")
    verdict = (
        paint("green", "healthy") if failing is None else f"{paint('red', 'unhealthy')} ({failing})"
    )
    lines.append(f"{verdict} in {elapsed_ms:.0f} ms")
    return lines
