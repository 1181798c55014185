"""The root Typer app: global options, and every command registered here, in one list.

``COMMANDS`` is the one place a command is added; its order is the order
``moviectl --help`` lists them (the order an operator meets them). A command is imported
and built when it is used (``RootGroup``), so start-up costs what the command line names.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.main

from moviectl import __version__
from moviectl.cli.context import MoviectlGroup, State, new_typer, state_of
from moviectl.cli.output import write_stdout

DOWN_HELP = """Stop the dev environment's server (the same as `moviectl db down`); data stays.

Example: `moviectl down` or `moviectl down --volumes --yes` (deletes all data)
"""

# (name, "module:attribute" in moviectl.cli: a Typer sub-app or a command function, help
# override). A command's module is imported, and its click command built, when the command
# line names it (or --help lists them all): `moviectl migrate status` neither imports nor
# builds the other 60-odd commands.
COMMANDS: list[tuple[str, str, str | None]] = [
    ("up", "commands_up:up_cmd", None),
    ("down", "commands_db:db_down", DOWN_HELP),
    ("doctor", "commands_doctor:doctor_cmd", None),
    ("db", "commands_db:db_app", None),
    ("migrate", "commands_migrate:migrate_app", None),
    ("seed", "commands_seed:seed_cmd", None),
    ("health", "commands_health:health", None),
    ("inspect", "commands_inspect:inspect_app", None),
    ("backup", "commands_backup:backup_app", None),
    ("restore", "commands_backup:restore_cmd", None),
    ("pitr", "commands_pitr:pitr_app", None),
    ("testdb", "commands_testdb:testdb_app", None),
    ("config", "commands_config:config_app", None),
    ("init", "commands_init:init_app", None),
]
HELP_ORDER = tuple(name for name, _, _ in COMMANDS)
# commands of a group that live in modules of their own: (group, name, "module:attribute")
SUBCOMMANDS = [
    ("db", "top", "commands_top:top_cmd"),  # db top: inspect's live view
    ("db", "upgrade", "commands_upgrade:upgrade_cmd"),  # major upgrades
    ("db", "admin", "commands_admin:admin_cmd"),  # pgAdmin, server registered
]


def _target(ref: str) -> Any:
    module, attr = ref.split(":")
    return getattr(importlib.import_module(f"moviectl.cli.{module}"), attr)


@functools.cache
def _group(name: str, ref: str) -> typer.Typer:
    """A sub-app with its commands from other modules added (once: the app is a module's)."""
    sub_app: typer.Typer = _target(ref)
    for group, sub_name, sub_ref in SUBCOMMANDS:
        if group == name:
            sub_app.command(sub_name)(_target(sub_ref))
    return sub_app


def _holder() -> None:
    """Holds one command while Typer builds it."""


def build_command(name: str) -> Any:
    """The click command for ``name``, built by Typer as ``app.add_typer``/``app.command``
    on the root would (the same options, ``--json`` included, help and group class)."""
    ref, help_text = next((r, h) for n, r, h in COMMANDS if n == name)
    holder = new_typer("", add_completion=False)
    holder.callback()(_holder)  # a group: Typer builds its commands as the root's
    target = _target(ref)
    if isinstance(target, typer.Typer):
        holder.add_typer(_group(name, ref), name=name)
    else:
        holder.command(name, help=help_text)(target)
    return typer.main.get_command(holder).commands[name]  # type: ignore[attr-defined]


class LazyCommands(MutableMapping[str, Any]):
    """The root's commands by name, each built on first use (``build_command``)."""

    def __init__(self, names: Sequence[str], build: Callable[[str], Any]) -> None:
        self._names = list(names)
        self._build = build
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            if name not in self._names:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, cmd: Any) -> None:
        if name not in self._names:
            self._names.append(name)
        self._built[name] = cmd

    def __delitem__(self, name: str) -> None:
        self._names.remove(name)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)


class RootGroup(MoviectlGroup):
    """Lists commands in ``COMMANDS`` order (Typer would put every group after the commands),
    builds each only when it is used (``LazyCommands``), and keeps the contract for what
    Typer itself rejects: under ``--json`` a usage error is one JSON document on stdout
    (exit code 2); otherwise Typer shows it its own way."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands(HELP_ORDER, build_command)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        words = tuple(sys.argv[1:] if args is None else args)
        extra["obj"] = State(words=words)  # the invocation's state, before any option is read
        return super().main(
            list(words), prog_name, complete_var, standalone_mode, windows_expand_args, **extra
        )

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        try:  # the root's own options
            return super().make_context(info_name, args, parent, **extra)
        except typer.TyperException as exc:
            usage_error(exc, extra.get("obj") or State())

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:  # the command's name, and everything below it
            return super().invoke(ctx)
        except typer.TyperException as exc:
            usage_error(exc, state_of(ctx))

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(self.commands)  # their names only: nothing is built to list them
        return sorted(names, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(names))


def usage_error(exc: typer.TyperException, state: State) -> NoReturn:
    """Under ``--json``: the usage error as one JSON document (and its line on stderr);
    otherwise Typer's own rendering (the exception goes on up)."""
    # click stops at an unknown option before it reads the options after it: the words
    # are all there is to say whether `--json` was asked for
    if not (state.json_mode or any(w == "--json" or w.startswith("--json=") for w in state.words)):
        if _stderr_closed():  # Typer's message has nowhere to go: keep its exit code
            raise typer.Exit(exc.exit_code) from None
        raise exc
    doc = {
        "ok": False,
        "error": "UsageError",
        "message": exc.format_message(),
        "hint": "see --help",
        "exit_code": exc.exit_code,
    }
    write_stdout(json.dumps(doc, indent=2) + "\n")
    with contextlib.suppress(OSError, AttributeError):  # stderr closed (2>&-): the JSON said it
        sys.stderr.write(f"error: {exc.format_message()}\n")
        sys.stderr.flush()
    raise typer.Exit(exc.exit_code) from None


def _stderr_closed() -> bool:
    if sys.stderr is None:  # closed before start (2>&-): Python left it unset
        return True
    try:
        os.fstat(2)
    except OSError:
        return True
    return False


def _version(ctx: typer.Context, value: bool) -> None:
    # not eager: `--json` (eager) has been read by now, wherever it stands
    if not value:
        return
    if state_of(ctx).json_mode:
        write_stdout(json.dumps({"name": "moviectl", "version": __version__}, indent=2) + "\n")
    else:
        typer.echo(f"moviectl {__version__}")
    raise typer.Exit()


def root(
    ctx: typer.Context,
    env_file: Annotated[
        Path | None,
        typer.Option("--env-file", help="Read settings from this file (default ./.env)."),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show tracebacks and more detail.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, help="Show the version.")
    ] = False,
) -> None:
    """moviectl: the movie database's operator toolkit."""
    state = state_of(ctx)
    state.verbose, state.env_file = verbose, env_file


def build_app() -> typer.Typer:
    """The root app: its options here, its commands (``COMMANDS``) in ``RootGroup``."""
    root_app = new_typer(
        "**moviectl**: run the movie service's PostgreSQL: server, migrations, seed data, "
        "health, backups and test databases.\n\nStart here: `moviectl up`\n\n"
        "Example: `moviectl --json health` (or `moviectl health --json`: every command "
        "takes `--json`)",
        no_args_is_help=True,
        cls=RootGroup,
    )
    root_app.callback()(root)  # the commands: RootGroup's, from COMMANDS as they are used
    return root_app


app = build_app()


def main() -> None:
    app(prog_name="moviectl")
