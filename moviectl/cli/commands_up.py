"""`moviectl up` (`moviectl down` is `db down` under a second name, see ``app.py``)."""

from __future__ import annotations

from typing import Annotated

import typer

from moviectl.cli.context import finite, out, settings_of
from moviectl.cli.render import render_up_summary


def up_cmd(
    ctx: typer.Context,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", min=1, max=3600, callback=finite, help="Seconds to wait for the server."
        ),
    ] = 90,
) -> None:
    """Bring the whole dev environment up: server, migrations, sample data, health.

    Idempotent: a second run changes nothing.

    Example: `uv run moviectl up`
    """
    from moviectl.cli.output import PullProgress
    from moviectl.core.up import up

    settings = settings_of(ctx)
    o = out(ctx)
    with o.status("bringing the environment up"):
        summary = up(settings, timeout=timeout, progress=PullProgress(o) if o.interactive else None)
    o.emit(summary, render_up_summary)
    raise typer.Exit(summary.health.exit_code)
