"""The one error handler: any exception a command raises becomes one clear line, a hint,
and a documented exit code (``infra/errors.py``); ``-v`` adds the real traceback.

Free of Typer, so ``health --live`` (``cli/live.py``, ahead of Typer) reports failures with
the very code every other command uses (``MoviectlGroup`` in ``cli/context.py`` calls
``report``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from moviectl.cli.output import Output, reader_gone, write_stdout
from moviectl.infra.errors import MoviectlError
from moviectl.infra.held_signals import Terminated

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


def report(
    exc: Exception | KeyboardInterrupt | Terminated,
    *,
    json_mode: bool,
    verbose: bool,
    command: str,
    settings: Settings | None,
) -> int:
    """Tell the operator what went wrong (stderr; under ``--json`` also one JSON document on
    stdout) and return the exit code. Called in the ``except`` block that caught ``exc``.

    ``command``: the command that ran (for the hint); ``settings``: those it had loaded.
    """
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return _stopped(
            "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated", json_mode
        )
    if isinstance(exc, BrokenPipeError) and stdout_reader_gone():
        return reader_gone()
    error = as_moviectl_error(exc, settings)
    if verbose:  # the real traceback, with what `from None` hid
        exc.__suppress_context__ = False
        Output().err.print_exception(show_locals=False)
    fit_hint(error, command, settings)
    try:
        Output(json_mode=json_mode, verbose=verbose).error(error)
    except BrokenPipeError:  # the JSON document's reader left (`… --json | jq`, jq died)
        if not stdout_reader_gone():
            raise
        reader_gone()
        Output().error(error)  # the line and the hint still go to stderr
    return int(error.exit_code)


def _stopped(what: str, json_mode: bool) -> int:
    """Ctrl-C (130) or SIGTERM (143): one word on stderr; under ``--json`` also the one JSON
    document stdout promises, errors included."""
    code = 130 if what == "interrupted" else 143
    if json_mode:
        import json

        doc = {"ok": False, "error": what.capitalize(), "message": what, "hint": None}
        try:
            write_stdout(json.dumps({**doc, "exit_code": code}, indent=2) + "\n")
        except BrokenPipeError:
            reader_gone()
    Output().err.print(f"[red]{what}[/]")
    return code


def stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (not a child tool's pipe)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def fit_hint(error: MoviectlError, command: str, settings: Settings | None) -> None:
    """ "start it with `moviectl db up`" only where moviectl can start it, and not as the
    answer to `db up` itself."""
    from moviectl.infra.errors import Unreachable

    if not isinstance(error, Unreachable) or error.hint != Unreachable.default_hint:
        return
    if settings is not None and settings.db_backend == "external":
        error.hint = "moviectl does not manage this server (MOVIE_DB_BACKEND=external): check "
        error.hint += "that it runs, and the host and port"
    elif command in ("up", "db"):
        error.hint = "see `moviectl db logs` and `moviectl doctor`"


def untranslated_db_error(exc: Exception, settings: Settings | None = None) -> MoviectlError | None:
    """A database error no command translated, by the one table (``infra/pgerrors.py``):
    the user error of an expected condition, else None (a bug, or a migration script's).
    ``settings``: the command's, so the message names host, port and database."""
    from moviectl.infra.pgerrors import classify

    return classify(exc, fallback=settings.target() if settings is not None else None)


def as_moviectl_error(exc: Exception, settings: Settings | None = None) -> MoviectlError:
    """Any exception as a one-line ``MoviectlError``: translated at the boundary where
    possible, else an internal error (exit 10) that asks for -v and a report."""
    from moviectl.infra.errors import InternalError, from_os_error

    if isinstance(exc, MoviectlError):
        return exc
    if isinstance(exc, OSError):
        return from_os_error(exc)
    expected = untranslated_db_error(exc, settings)
    if expected is not None:
        return expected
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    graph = _revision_graph_error(exc)
    if graph is not None:
        return graph
    broken = _in_migration_script(exc)
    if broken is not None:
        return MoviectlError(
            f"migration script {broken[0]} failed at line {broken[1]}: "
            f"{type(exc).__name__}: {first}",
            hint=f"fix {broken[0]} (`python -m py_compile` shows a syntax error), "
            "or move it out of versions/",
        )
    return InternalError(f"internal error: {type(exc).__name__}: {first}")


def _revision_graph_error(exc: BaseException) -> MoviectlError | None:
    """The migration scripts' revisions do not form a graph Alembic can walk (a script that
    is its own down_revision, a cycle, an unknown parent): the project's scripts, exit 2."""
    revision = sys.modules.get("alembic.script.revision")
    if revision is None:
        return None
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, revision.CycleDetected):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return None
    from moviectl.infra.errors import ConfigError

    line = (str(seen).strip().splitlines() or [type(seen).__name__])[0][:300]
    return ConfigError(
        f"the migration scripts' revisions do not form a history: {line}",
        hint="fix the revision / down_revision lines of the script named "
        "(`moviectl migrate history` works again once they do)",
    )


def _in_migration_script(exc: BaseException) -> tuple[str, int] | None:
    """(file, line) when ``exc`` came from a migration script: the project's code, not ours."""
    scripts = sys.modules.get("moviectl.core.migrations.scripts")
    if scripts is None:  # no command that reads the scripts ran
        return None
    from pathlib import Path

    try:
        versions = Path(scripts.versions_location()).resolve()
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
