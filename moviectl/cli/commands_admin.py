"""`moviectl db admin [--stop]`: pgAdmin with the app's server registered."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import finite, out, settings_of

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.admin.run import AdminResult


def admin_cmd(
    ctx: typer.Context,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the running pgAdmin.")] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            min=1,
            max=3600,
            callback=finite,
            help="Seconds to wait for pgAdmin to answer (and for another `db admin`).",
        ),
    ] = 180,
) -> None:
    """Start pgAdmin 4 with the app's server registered (no password to type) and print
    its URL; a second run reports the running one; --stop stops it.

    pgAdmin runs in desktop mode on 127.0.0.1, from its own virtual environment (made on
    first use, ~500 MB, under ~/.cache/moviectl); its files are in MOVIE_DATA_DIR/pgadmin.

    Example: `moviectl db admin` then open the URL, or `moviectl db admin --stop`
    """
    from moviectl.core.admin.run import start
    from moviectl.core.admin.run import stop as stop_admin

    settings = settings_of(ctx)
    o = out(ctx)
    if stop:
        o.emit(stop_admin(settings, timeout=timeout), render_admin)
        return
    with o.status("starting pgAdmin"):
        result = start(settings, timeout=timeout, progress=o.info)
    o.emit(result, render_admin)


def render_admin(c: Console, r: AdminResult) -> None:
    if r.state in ("stopped", "not running"):
        note = " (its record was stale: the process was gone)" if r.replaced_stale else ""
        c.print(f"[green]✓[/] pgAdmin {r.state}{note}")
        return
    if r.replaced_stale:
        c.print("[yellow]![/] replaced the record of a pgAdmin that was gone")
    took = f" in {r.seconds:g} s" if r.seconds is not None else ""
    what = "started" if r.state == "started" else "already running"
    c.print(f"[green]✓[/] pgAdmin {r.version} {what}{took} (pid {r.pid}), {r.server} registered")
    c.print(f"  open: {r.url}")
    c.print("  stop: moviectl db admin --stop")
