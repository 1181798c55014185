"""`moviectl up` / `moviectl down` / `moviectl doctor`."""

from __future__ import annotations

from typing import Annotated

import typer

from moviectl.cli.app import JsonOpt, app, out, settings_of
from moviectl.cli.commands_db import db_down
from moviectl.views import render_doctor, render_up_summary


@app.command("up")
def up_cmd(
    ctx: typer.Context,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the server.")
    ] = 90,
    json: JsonOpt = False,
) -> None:
    """Bring the whole dev environment up: server, migrations, sample data, health.

    Idempotent: a second run changes nothing.

    Example: `uv run moviectl up`
    """
    from moviectl import devenv
    from moviectl.output import PullProgress

    settings = settings_of(ctx)
    o = out(ctx, json)
    with o.status("bringing the environment up"):
        summary = devenv.up(settings, timeout=timeout,
                            progress=PullProgress(o) if o.interactive else None)  # fmt: skip
    o.emit(summary, render_up_summary)
    raise typer.Exit(summary.health.exit_code)


# `moviectl down` is `moviectl db down`, under the name that mirrors `moviectl up`.
app.command(
    "down", help="Stop the dev environment's server (the same as `moviectl db down`); data stays."
)(db_down)


@app.command("doctor")
def doctor_cmd(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Check this machine and config before anything breaks, each finding with a fix.

    Example: `moviectl doctor`
    """
    from moviectl import doctor

    state = ctx.obj
    report = doctor.run(settings_of(ctx), env_file=getattr(state, "env_file", None))
    out(ctx, json).emit(report, render_doctor)
    raise typer.Exit(0 if report.ok else 1)
