"""`moviectl config show`."""

from __future__ import annotations

import typer

from moviectl.cli.context import new_typer, out, state_of
from moviectl.cli.render import SettingsShown, render_settings

config_app = new_typer("Inspect moviectl's configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Show every setting, its value (secrets masked) and where it came from.

    Example: `moviectl config show --json | jq '.settings[] | select(.source != "default")'`
    """
    from moviectl.infra.settings_report import describe_settings

    state = state_of(ctx)
    settings = state.settings()
    result: SettingsShown = {
        "env_file": str(state.env_file or ".env"),
        "database_url": settings.masked_url,
        "settings": describe_settings(settings, state.env_file),
    }
    out(ctx).emit(result, render_settings)
