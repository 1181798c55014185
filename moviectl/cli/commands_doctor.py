"""`moviectl doctor`."""

from __future__ import annotations

import typer

from moviectl.cli.context import out, settings_of, state_of
from moviectl.cli.render import render_doctor


def doctor_cmd(ctx: typer.Context) -> None:
    """Check this machine and config before anything breaks, each finding with a fix.

    Example: `moviectl doctor`
    """
    from moviectl.core import doctor

    report = doctor.run(settings_of(ctx), env_file=state_of(ctx).env_file)
    out(ctx).emit(report, render_doctor)
    raise typer.Exit(0 if report.ok else 1)
