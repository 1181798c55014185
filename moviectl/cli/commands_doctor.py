"""`moviectl doctor`."""

from __future__ import annotations

import typer

from moviectl.cli.context import JsonOpt, out, settings_of
from moviectl.cli.render import render_doctor


def doctor_cmd(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Check this machine and config before anything breaks, each finding with a fix.

    Example: `moviectl doctor`
    """
    from moviectl.core import doctor

    state = ctx.obj
    report = doctor.run(settings_of(ctx), env_file=getattr(state, "env_file", None))
    out(ctx, json).emit(report, render_doctor)
    raise typer.Exit(0 if report.ok else 1)
