"""`moviectl inspect`'s results for people (JSON needs none; results arrive escaped)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from moviectl.cli.output import fmt_bytes, fmt_duration, table

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.inspect.diagnose import DiagnoseReport
    from moviectl.core.inspect.kill import KillResult
    from moviectl.core.inspect.model import Column, InspectResult

SQL_WIDTH = 100  # a query in a table cell: the start of it, on one line


def cell(col: Column, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if col.kind == "bytes":
        return fmt_bytes(int(value))
    if col.kind == "seconds":
        return fmt_duration(float(value))
    if col.kind == "pct":
        return f"{float(value):.1f} %"
    if col.kind == "int":
        return f"{int(value):,}"
    text = str(value)
    if col.kind == "sql":
        text = re.sub(r"\s+", " ", text).strip()
        return text if len(text) <= SQL_WIDTH else text[: SQL_WIDTH - 1] + "…"
    return text


def render_inspect(c: Console, r: InspectResult) -> None:
    if r.unavailable:
        c.print(f"[yellow]![/] {r.unavailable}")
        return
    c.print(f"[bold]{r.title}[/] [dim](PostgreSQL {r.server_major})[/]")
    if r.rows:
        rows = [[cell(col, row.get(col.key)) for col in r.columns] for row in r.rows]
        c.print(table(None, [col.label for col in r.columns], rows))
    else:
        c.print("[green]✓[/] nothing to show")
    for note in r.notes:
        c.print(f"[dim]note:[/] {note}")


_MARK = {"green": "[green]● ok[/]", "yellow": "[yellow]● warning[/]", "red": "[red]● error[/]"}


def render_diagnose(c: Console, r: DiagnoseReport) -> None:
    c.print(f"[bold]diagnose[/] [dim](PostgreSQL {r.server_major})[/]")
    for f in r.findings:
        c.print(f"{_MARK[f.status]}  [bold]{f.check}[/]: {f.summary}")
        if f.fix and f.status != "green":
            c.print(f"     [dim]fix:[/] {f.fix}")
    words = {"green": "all clear", "yellow": "warnings", "red": "errors"}
    c.print(f"{_MARK[r.status]}  {words[r.status]}")


def render_kill(c: Console, r: KillResult) -> None:
    mark = "[green]✓[/]" if r.stopped else "[yellow]![/]"
    c.print(f"{mark} {r.message}")
