"""What every command module shares: the invocation's state, the one error handler,
the output layer for this invocation, confirmation, and the common options.

Commands stay thin: load settings, call one core function, hand the result to
the output layer. Heavy modules (SQLAlchemy, Alembic, psycopg, docker) are only
imported inside commands, so ``moviectl --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Typer runs on its own copy of click: its exceptions, not the click package's
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from moviectl.cli.output import Output
from moviectl.infra.errors import ConfirmationRequired, MoviectlError, Refused

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
        except KeyboardInterrupt:
            Output().err.print("[red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # the one handler: nothing reaches the operator raw
            if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
                # `moviectl … | head`: the reader left; say nothing, as cat and git do
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                raise typer.Exit(141) from None  # 128 + SIGPIPE, as a shell reports it
            error = as_moviectl_error(exc)
            state = ctx.find_object(State) or State()
            if state.verbose:  # the real traceback, with what `from None` hid
                exc.__suppress_context__ = False
                Output().err.print_exception(show_locals=False)
            _fit_hint(error, ctx)
            out(ctx, wants_json).error(error)
            raise typer.Exit(int(error.exit_code)) from None


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (not a child tool's pipe)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def _fit_hint(error: MoviectlError, ctx: typer.Context) -> None:
    """ "start it with `moviectl db up`" only where moviectl can start it, and not as the
    answer to `db up` itself."""
    from moviectl.infra.errors import Unreachable

    if not isinstance(error, Unreachable) or error.hint != Unreachable.default_hint:
        return
    state = ctx.find_object(State)
    settings = getattr(state, "_settings", None)
    command = ctx.invoked_subcommand or ""
    if settings is not None and settings.db_backend == "external":
        error.hint = "moviectl does not manage this server (MOVIE_DB_BACKEND=external): check "
        error.hint += "that it runs, and the host and port"
    elif command in ("up", "db"):
        error.hint = "see `moviectl db logs` and `moviectl doctor`"


def driver_error(first: str, sqlstate: str) -> MoviectlError:
    """A database error by its SQLSTATE class, for errors no command translated itself."""
    from moviectl.infra.errors import AuthFailed, DatabaseMissing, PermissionDenied, Unreachable

    message = f"the database said: {first}"
    if sqlstate == "42501":
        return PermissionDenied(message, hint="grant the role what it needs, or use another")
    if sqlstate == "3D000":
        return DatabaseMissing(message)
    if sqlstate.startswith("28"):
        return AuthFailed(message)
    if sqlstate == "53300" or sqlstate.startswith(("08", "57P")):
        return Unreachable(message)
    return MoviectlError(message)


def as_moviectl_error(exc: Exception) -> MoviectlError:
    """Any exception as a one-line ``MoviectlError``: translated at the boundary where
    possible, else an internal error (exit 10) that asks for -v and a report."""
    from moviectl.infra.errors import InternalError, from_os_error

    if isinstance(exc, MoviectlError):
        return exc
    if isinstance(exc, OSError):
        return from_os_error(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):  # a driver error that no
        return driver_error(first, getattr(exc, "sqlstate", None) or "")  # command translated

    broken = _in_migration_script(exc)
    if broken is not None:
        return MoviectlError(
            f"migration script {broken[0]} failed at line {broken[1]}: "
            f"{type(exc).__name__}: {first}",
            hint=f"fix {broken[0]} (`python -m py_compile` shows a syntax error), "
            "or move it out of versions/",
        )
    return InternalError(f"internal error: {type(exc).__name__}: {first}")


def _in_migration_script(exc: BaseException) -> tuple[str, int] | None:
    """(file, line) when ``exc`` came from a migration script: the project's code, not ours."""
    scripts = sys.modules.get("moviectl.core.migrations.scripts")
    if scripts is None:  # no command that reads the scripts ran
        return None
    from pathlib import Path

    try:
        versions = Path(scripts.script_location(), "versions").resolve()
    except MoviectlError:
        return None

    def inside(name: str | None) -> bool:
        return bool(name) and Path(str(name)).resolve().parent == versions

    found: tuple[str, int] | None = None
    if isinstance(exc, SyntaxError) and inside(exc.filename):
        found = (str(exc.filename), exc.lineno or 0)
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame in a script wins
        if inside(tb.tb_frame.f_code.co_filename):
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


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
