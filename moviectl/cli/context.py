"""What every command module shares: the invocation's state, the group that hands every
error to the one handler (``cli/failure.py``), the output layer for this invocation,
confirmation, and the common options.

Commands stay thin: load settings, call one core function, hand the result to
the output layer. Heavy modules (SQLAlchemy, Alembic, psycopg, docker) are only
imported inside commands, so ``moviectl --help`` stays fast.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Typer runs on its own copy of click: its exceptions, not the click package's
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from moviectl.cli.failure import report
from moviectl.cli.output import Output
from moviectl.infra.errors import ConfirmationRequired, Refused
from moviectl.infra.held_signals import Terminated, stopping

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


@dataclass
class State:
    json_mode: bool = False
    verbose: bool = False
    env_file: Path | None = None
    _settings: Any = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            from moviectl.infra.settings import load_settings

            self._settings = load_settings(self.env_file)
        return self._settings


class MoviectlGroup(TyperGroup):
    """Renders every ``MoviectlError`` in one place: a red line, a hint, an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        # `--json` anywhere (global or the command's own) means errors are JSON too, even
        # those raised before the command has read its own options (bad settings).
        wants_json = "--json" in [*getattr(ctx, "protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, click_errors.ClickException):
            raise
        except (Exception, KeyboardInterrupt, Terminated) as exc:  # the one handler (failure.py)
            if isinstance(exc, KeyboardInterrupt | Terminated):
                stopping()  # on the way out: a second signal must not cut the report
            state = ctx.find_object(State) or State()
            code = report(
                exc,
                json_mode=wants_json or state.json_mode,
                verbose=state.verbose,
                command=ctx.invoked_subcommand or "",
                settings=state._settings,
            )
            raise typer.Exit(code) from None


def out(ctx: typer.Context, json_flag: bool = False) -> Output:
    """The output layer for this invocation (global ``--json`` or the command's own)."""
    state = ctx.find_object(State) or State()
    if json_flag:
        state.json_mode = True
    return Output(json_mode=state.json_mode, verbose=state.verbose)


def settings_of(ctx: typer.Context) -> Settings:
    state = ctx.find_object(State) or State()
    return state.settings()


def confirm(ctx: typer.Context, question: str, yes: bool) -> None:
    """Ask before a destructive step; refuse in a non-interactive shell without ``--yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"confirmation needed (stdin is not a terminal): {question}")
    if not typer.confirm(question, default=False, err=True):
        raise Refused("aborted: nothing was changed", hint=None)


def new_typer(help_text: str, **kwargs: Any) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        cls=kwargs.pop("cls", MoviectlGroup),
        no_args_is_help=kwargs.pop("no_args_is_help", False),
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
