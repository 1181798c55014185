"""The root Typer app: global options, and every command registered here, in one list.

``COMMANDS`` is the one place a command is added; its order is the order
``moviectl --help`` lists them (the order an operator meets them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from moviectl import __version__
from moviectl.cli import (
    commands_backup,
    commands_config,
    commands_db,
    commands_doctor,
    commands_health,
    commands_migrate,
    commands_seed,
    commands_testdb,
    commands_up,
)
from moviectl.cli.context import MoviectlGroup, State, new_typer

DOWN_HELP = """Stop the dev environment's server (the same as `moviectl db down`); data stays.

Example: `moviectl down` or `moviectl down --volumes --yes` (deletes all data)
"""

# (name, a Typer sub-app or a command function, help override)
COMMANDS: list[tuple[str, Any, str | None]] = [
    ("up", commands_up.up_cmd, None),
    ("down", commands_db.db_down, DOWN_HELP),
    ("doctor", commands_doctor.doctor_cmd, None),
    ("db", commands_db.db_app, None),
    ("migrate", commands_migrate.migrate_app, None),
    ("seed", commands_seed.seed_cmd, None),
    ("health", commands_health.health, None),
    ("backup", commands_backup.backup_app, None),
    ("restore", commands_backup.restore_cmd, None),
    ("testdb", commands_testdb.testdb_app, None),
    ("config", commands_config.config_app, None),
]
HELP_ORDER = tuple(name for name, _, _ in COMMANDS)


class RootGroup(MoviectlGroup):
    """Lists commands in ``COMMANDS`` order (Typer would put every group after the commands)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(names))


app = new_typer(
    "**moviectl**: run the movie service's PostgreSQL: server, migrations, seed data, "
    "health, backups and test databases.\n\nStart here: `moviectl up`",
    no_args_is_help=True,
    cls=RootGroup,
)

for _name, _target, _help in COMMANDS:
    if isinstance(_target, typer.Typer):
        app.add_typer(_target, name=_name)
    else:
        app.command(_name, help=_help)(_target)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moviectl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    json_mode: Annotated[
        bool, typer.Option("--json", help="Every command prints one JSON document.")
    ] = False,
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="Read settings from this file (default ./.env)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and more detail.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """moviectl: the movie database's operator toolkit."""
    ctx.obj = State(json_mode=json_mode, verbose=verbose, env_file=env_file)


def main() -> None:
    app(prog_name="moviectl")
