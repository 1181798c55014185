"""What every command module shares: the invocation's state, the one ``--json`` option, the
group that hands every error to the one handler (``cli/failure.py``), the output layer for
this invocation, confirmation, and the common options.

Commands stay thin: load settings, call one core function, hand the result to
the output layer. Heavy modules (SQLAlchemy, Alembic, psycopg, docker) are only
imported inside commands, so ``moviectl --help`` stays fast.

Typer's public API only: ``typer.TyperException`` is the root of what Typer rejects (usage
errors), ``typer.core.TyperGroup`` the class ``cls=`` takes (Typer runs on its own copy of
click since 0.26, so the click package's classes are not the ones it raises).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from typer.core import TyperGroup

from moviectl.cli.failure import report
from moviectl.cli.output import Output
from moviectl.infra.errors import ConfirmationRequired, Refused
from moviectl.infra.held_signals import Terminated, stopping

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class State:
    json_mode: bool = False
    verbose: bool = False
    env_file: Path | None = None
    words: tuple[str, ...] = ()  # the command line, for what click rejects unread
    _settings: Settings | None = field(default=None, repr=False)

    def settings(self) -> Settings:
        if self._settings is None:
            from moviectl.infra.settings import load_settings

            self._settings = load_settings(self.env_file)
        return self._settings


def state_of(ctx: typer.Context) -> State:
    """This invocation's state (``RootGroup.main`` puts one on the root context)."""
    return ctx.ensure_object(State)


def _json_option(ctx: typer.Context, value: bool) -> bool:
    # eager: set as the option is parsed, before the other options are checked, so that
    # a bad value in one of them is reported as a JSON document too
    if value:
        state_of(ctx).json_mode = True
    return value


JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        is_eager=True,
        callback=_json_option,
        help="Print one JSON document on stdout (errors too).",
    ),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def finite(value: float | None) -> float | None:
    """A float option's callback: click's ranges let ``nan`` through (every comparison with
    it is false), and a timeout of ``nan`` would never end."""
    if value is not None and value != value:
        raise typer.BadParameter("expected a number, not nan")
    return value


def takes_json(command: F) -> F:
    """``command`` with the ``--json`` option added to its parameters (Typer reads the
    signature); the option's callback records it, the command never sees it.

    The signature is evaluated here, once, so Typer does not evaluate it again."""
    signature = inspect.signature(command, eval_str=True)
    json_param = inspect.Parameter(
        "json", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=JsonOpt
    )

    @functools.wraps(command)
    def run(*args: Any, json: bool = False, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    params = [*signature.parameters.values(), json_param]
    run.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run  # type: ignore[return-value]


class MoviectlTyper(typer.Typer):
    """A Typer app whose every command and callback takes ``--json`` (one option, one
    callback, declared once in ``JsonOpt``)."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return _with_json(super().command(*args, **kwargs))

    def callback(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        return _with_json(super().callback(*args, **kwargs))


def _with_json(register: Callable[[Any], Any]) -> Callable[[F], F]:
    """Typer's decorator, registering the command with ``--json``; ``f`` itself unchanged."""

    def decorator(f: F) -> F:
        register(takes_json(f))
        return f

    return decorator


class MoviectlGroup(TyperGroup):
    """Renders every ``MoviectlError`` in one place: a red line, a hint, an exit code; a
    group named alone prints its help (exit 0), or under ``--json`` a usage error (2)."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            if state_of(ctx).json_mode:  # one JSON document, as for the root alone
                ctx.fail("Missing command.")
            help_text = ctx.get_help()  # Typer's Rich help prints itself and returns ""
            if help_text:
                typer.echo(help_text)
            raise typer.Exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.TyperException):
            raise
        except (Exception, KeyboardInterrupt, Terminated, typer.Abort) as exc:  # the one handler
            if isinstance(exc, KeyboardInterrupt | Terminated):
                stopping()  # on the way out: a second signal must not cut the report
            if isinstance(exc, typer.Abort):  # a prompt ended by Ctrl-D or Ctrl-C
                exc = Refused("aborted: nothing was changed", hint=None)
            state = state_of(ctx)
            code = report(
                exc,
                json_mode=state.json_mode,
                verbose=state.verbose,
                command=ctx.invoked_subcommand or "",
                settings=state._settings,
            )
            raise typer.Exit(code) from None


def out(ctx: typer.Context) -> Output:
    """The output layer for this invocation (``--json``, wherever it was given)."""
    state = state_of(ctx)
    return Output(json_mode=state.json_mode, verbose=state.verbose)


def settings_of(ctx: typer.Context) -> Settings:
    return state_of(ctx).settings()


def confirm(ctx: typer.Context, question: str, yes: bool) -> None:
    """Ask before a destructive step; refuse in a non-interactive shell without ``--yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRequired(f"confirmation needed (stdin is not a terminal): {question}")
    if not typer.confirm(question, default=False, err=True):
        raise Refused("aborted: nothing was changed", hint=None)


def new_typer(help_text: str, **kwargs: Any) -> MoviectlTyper:
    return MoviectlTyper(
        help=help_text,
        cls=kwargs.pop("cls", MoviectlGroup),
        no_args_is_help=kwargs.pop("no_args_is_help", False),
        rich_markup_mode="markdown",
        context_settings={"help_option_names": ["-h", "--help"]},
        **kwargs,
    )
