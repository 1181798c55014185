"""`moviectl db top`: a live, refreshing view of the sessions (Rich Live), quit with q or
Ctrl-C; one snapshot under --json, --once, or when stdout is not a terminal."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from moviectl.cli.context import finite, out, settings_of
from moviectl.cli.output import fmt_duration, markup_safe, table

if TYPE_CHECKING:
    from rich.console import Group

    from moviectl.core.inspect.top import TopSnapshot


def top_view(s: TopSnapshot, interactive: bool) -> Group:
    from rich.console import Group
    from rich.text import Text

    from moviectl.cli.render_inspect import SQL_WIDTH

    s = markup_safe(s)
    c = s.counts
    head = (
        f"[bold]moviectl db top[/] [dim](PostgreSQL {s.server_major})[/]  {c['sessions']} "
        f"sessions: {c['active']} active, {c['idle_in_transaction']} idle in transaction, "
        f"{c['waiting']} waiting for a lock" + ("   [dim]q quits[/]" if interactive else "")
    )
    rows = [
        [
            r["pid"],
            r["user"] or "-",
            r["application"] or "",
            r["state"],
            r["wait"] or "",
            fmt_duration(r["duration"]),
            ", ".join(map(str, r["blocked_by"] or [])),
            " ".join((r["query"] or "").split())[:SQL_WIDTH],
        ]
        for r in s.sessions
    ]
    cols = ["pid", "user", "application", "state", "waiting on", "for", "blocked by", "query"]
    parts: list[Any] = [Text.from_markup(head), table(None, cols, rows)]
    parts += [Text.from_markup(f"[dim]note:[/] {n}") for n in s.notes]
    return Group(*parts)


@contextmanager
def keys() -> Iterator[Any]:
    """The terminal in cbreak mode (keys arrive one by one; Ctrl-C still interrupts),
    restored on the way out; a reader of one key within a timeout."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def top_cmd(
    ctx: typer.Context,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.2, max=3600, callback=finite, help="Seconds between refreshes."
        ),
    ] = 2.0,
    show_idle: Annotated[bool, typer.Option("--idle", help="Show idle sessions too.")] = False,
    once: Annotated[bool, typer.Option("--once", help="Print one snapshot and exit.")] = False,
) -> None:
    """A live view of the sessions, their waits and who blocks whom; q or Ctrl-C quits.

    Example: `moviectl db top` or `moviectl db top --once --json`
    """
    from moviectl.core.inspect.session import inspecting
    from moviectl.core.inspect.top import snapshot

    o = out(ctx)
    live = not (o.json_mode or once) and o.console.is_terminal and sys.stdin.isatty()
    with inspecting(settings_of(ctx)) as i:
        if not live:
            s = snapshot(i, show_idle=show_idle)
            o.emit(s, lambda c, r: c.print(top_view(r, False)))
            return
        from rich.live import Live

        with keys() as key, Live(console=o.console, auto_refresh=False, screen=True) as view:
            try:
                while True:
                    view.update(top_view(snapshot(i, show_idle=show_idle), True), refresh=True)
                    if (key(interval) or "").lower() == "q":
                        return
            except KeyboardInterrupt:
                return
