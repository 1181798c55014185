"""The renderer of `migrate lint` for people (its JSON needs none; results arrive escaped)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from moviectl.cli.output import fmt_bytes

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.migrations.lint import LintFinding, LintReport

_MARKS = {"error": "[red]✗ error[/]", "warning": "[yellow]! warning[/]", "info": "[dim]i info[/]"}


def _size(f: LintFinding) -> str:
    if f.rows is None:
        return f.weight
    rows = "no rows" if f.rows == 0 else f"{f.rows:,} row{'s' if f.rows != 1 else ''}"
    return f"{f.table}: {rows}, {fmt_bytes(f.bytes)} ({f.weight})"


def render_lint(c: Console, r: LintReport) -> None:
    where = f"database {r.database}" if r.mode == "database" else "offline"
    c.print(f"linting {r.range} ({where}): {', '.join(r.migrations) or 'no migrations'}")
    if r.note:
        c.print(f"[dim]{r.note}[/]")
    for f in r.findings:
        mark = "[green]✓ acknowledged[/]" if f.acknowledged else _MARKS[f.severity]
        c.print(f"{f.file}:{f.line}: {mark} [bold]{f.rule}[/] ({f.revision}) {f.message}")
        c.print(f"    {f.statement}", soft_wrap=True)
        if f.acknowledged:
            c.print(f"    [dim]reason:[/] {f.reason or ''}")
            continue
        if f.weight != "not weighed":  # breaks running code whatever the table's size
            c.print(f"    [dim]size:[/] {_size(f)}")
        c.print(f"    [dim]why:[/]  {f.why}")
        c.print(f"    [dim]fix:[/]  {f.fix}")
    acked = sum(1 for f in r.findings if f.acknowledged)
    tally = f"{r.errors} error(s), {r.warnings} warning(s), {acked} acknowledged"
    if r.ok:
        c.print(f"[green]✓[/] {tally}" if r.findings else "[green]✓[/] no hazards found")
    else:
        c.print(f"[red]✗[/] {tally}")
