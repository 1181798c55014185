"""`moviectl config show`."""

from __future__ import annotations

import typer

from moviectl.cli.app import JsonOpt, State, app, new_typer, out
from moviectl.views import render_settings

config_app = new_typer("Inspect moviectl's configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Show every setting, its value (secrets masked) and where it came from.

    Example: `moviectl config show --json | jq '.settings[] | select(.source != "default")'`
    """
    from moviectl.settings import describe_settings

    state = ctx.find_object(State) or State()
    settings = state.settings()
    result = {
        "env_file": str(state.env_file or ".env"),
        "database_url": settings.masked_url,
        "settings": describe_settings(settings, state.env_file),
    }
    out(ctx, json).emit(result, render_settings)
