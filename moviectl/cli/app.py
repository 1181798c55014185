"""The root Typer app: global options, and every command registered here, in one list.

``COMMANDS`` is the one place a command is added; its order is the order
``moviectl --help`` lists them (the order an operator meets them).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

# Typer runs on its own copy of click: its exceptions, not the click package's
from typer._click import exceptions as click_errors

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
from moviectl.infra.errors import ExitCode

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
    """Lists commands in ``COMMANDS`` order (Typer would put every group after the commands),
    and keeps the contract for what click itself rejects: under ``--json`` a usage error or
    ``--version`` is one JSON document on stdout; the exit code of a usage error is 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args) or ["--help"]  # alone: the help
        wants_json = "--json" in argv
        if wants_json and "--version" in argv:
            _print_json({"name": "moviectl", "version": __version__})
            sys.exit(0)
        try:
            code = super().main(
                args=argv, prog_name=prog_name, complete_var=complete_var, standalone_mode=False
            )
        except click_errors.NoArgsIsHelpError as exc:  # a group alone: its help
            if exc.ctx is not None:
                typer.echo(exc.ctx.get_help())
            sys.exit(0)
        except click_errors.ClickException as exc:
            if wants_json:
                _print_json(
                    {
                        "ok": False,
                        "error": "UsageError",
                        "message": exc.format_message(),
                        "hint": "see --help",
                        "exit_code": exc.exit_code,
                    }
                )
                sys.stderr.write(f"error: {exc.format_message()}\n")
            else:
                _show_usage_error(exc)
            sys.exit(exc.exit_code)
        except typer.Abort:
            sys.stderr.write("aborted: nothing was changed\n")
            sys.exit(int(ExitCode.REFUSED))
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(names))


def _print_json(doc: dict[str, Any]) -> None:
    import json

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()


def _show_usage_error(exc: click_errors.ClickException) -> None:
    """Typer's own rendering of a usage error (a box with the hint), else click's."""
    try:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
    except Exception:
        exc.show()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"moviectl {__version__}")
        raise typer.Exit()


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


def build_app(only: str | None = None) -> typer.Typer:
    """The root app with every command, or with the one command ``only`` (its options,
    help and errors are the same: Typer builds each command on its own)."""
    root_app = new_typer(
        "**moviectl**: run the movie service's PostgreSQL: server, migrations, seed data, "
        "health, backups and test databases.\n\nStart here: `moviectl up`",
        no_args_is_help=True,
        cls=RootGroup,
    )
    root_app.callback()(root)
    for name, target, help_text in COMMANDS:
        if only is not None and name != only:
            continue
        if isinstance(target, typer.Typer):
            root_app.add_typer(target, name=name)
        else:
            root_app.command(name, help=help_text)(target)
    return root_app


app = build_app()

_GLOBAL_FLAGS = frozenset({"--json", "--verbose", "-v"})


def invoked_command(args: Sequence[str]) -> str | None:
    """The command ``args`` name after the global options, when it is one of ``COMMANDS``;
    None for anything else (the root's help or version, a typo: the whole app answers)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _GLOBAL_FLAGS or arg.startswith("--env-file="):
            i += 1
        elif arg == "--env-file":
            i += 2
        else:
            return arg if arg in HELP_ORDER else None
    return None


def main() -> None:
    # Typer builds every command's parameters before it parses (~25 ms for all of them):
    # a run builds only the command it runs
    build_app(invoked_command(sys.argv[1:]))(prog_name="moviectl")
