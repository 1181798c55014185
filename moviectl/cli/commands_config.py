"""`moviectl config show`."""

from __future__ import annotations

import typer

from moviectl.cli.context import new_typer, out, state_of
from moviectl.cli.render import SettingsShown, render_settings

config_app = new_typer("Inspect moviectl's configuration.", no_args_is_help=True)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Show every setting, its value (secrets masked) and where it came from, which
    environment the database is (`moviectl db protect`'s mark) and whose schema moviectl
    manages (a service's `[tool.moviectl]`, else its own).

    Example: `moviectl config show --json | jq '.settings[] | select(.source != "default")'`
    """
    from moviectl.core.migrations.project import schema_source
    from moviectl.infra.protect import UNKNOWN, environment_of
    from moviectl.infra.settings_report import describe_settings

    state = state_of(ctx)
    settings = state.settings()
    source = schema_source()
    # config show is where people look when the server is in trouble: ask briefly
    env = environment_of(settings, connect_timeout=min(settings.connect_timeout, 2))
    result: SettingsShown = {
        "env_file": str(state.env_file or ".env"),
        "database_url": settings.masked_url,
        "settings": describe_settings(settings, state.env_file),
        "protection": "unknown" if env == UNKNOWN else "protected" if env else "not protected",
        "environment": None if env == UNKNOWN else env,
        "schema": {
            "migrations": str(source.versions),
            "metadata": source.metadata,
            "origin": source.origin,
        },
    }
    out(ctx).emit(result, render_settings)
