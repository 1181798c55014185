"""The console script's entry, with fast paths for ``moviectl health``'s one-shot forms and
for a plain ``moviectl backup`` run by a script.

A container healthcheck runs ``moviectl health --live`` every few seconds, and probes and
scripts run ``moviectl health [--ready] [--json]``: these must cost about what the
questions cost (``pg_isready``, one login and a few queries), so this path imports
neither Typer, Rich nor SQLAlchemy, and ``--live`` neither psycopg nor pydantic. It reads
the settings with the full CLI's own reader and rules (``raw_settings``, and
``resolve_fields`` under ``conninfo.resolve_target``), runs the same checks
(``core.health.checks``; for ``--live``, ``probe.reachable`` under its reachable check) and
prints the same JSON document, or the same lines (``cli/health_text.py``) that the full CLI
prints where there is no terminal.

``--live`` stays in the standard library's cheapest corner: ``libpq_syntax``, ``probe`` and
``health_text`` import no ``dataclasses``, ``typing``, ``re``, ``pathlib`` or ``enum``, so
its report is built here as ``HealthReport``'s JSON document, and ``errors`` is imported only
when a setting is rejected.

Anything else goes to the full CLI: another option, a terminal (people get colour),
``FORCE_COLOR``/``TTY_COMPATIBLE``, ``MOVIECTL_NO_FASTPATH=1``, or connection settings the
reader rejects (the full CLI explains them with the same code). The fast path reads only
the connection settings and ``MOVIE_CONNECT_TIMEOUT``: a bad value in another setting
(``MOVIE_POOL_SIZE=x``) fails every other command, not this probe.

``moviectl [--json] backup [--json] [-o DIR | --output DIR | --output=DIR]`` with no terminal
on stderr (cron, CI, a script: no progress line to draw) skips Typer (~50 ms of a backup
whose goal is 1.1x bare pg_dump) and does what the command does: ``load_settings``, the same
core function, the same output layer and renderer, and failures through the full CLI's one
handler (``cli/failure.py``). Any other option, a repeated one, a value starting with ``-``,
or ``MOVIECTL_NO_FASTPATH=1``: the full CLI, which parses it as Typer does.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~7 ms)
if TYPE_CHECKING:
    from typing import TextIO

    from moviectl.infra.early_settings import EarlySettings
    from moviectl.infra.held_signals import Terminated
    from moviectl.infra.settings import Settings

_OPTIONS = {"--live", "--ready", "--json"}


def fast_form(args: list[str]) -> tuple[str, bool] | None:
    """(``live`` | ``ready`` | ``all``, JSON?) when ``args`` is a form the fast path answers."""
    json_mode = args[:1] == ["--json"]  # the global option, before the command
    rest = args[1:] if json_mode else args
    if rest[:1] != ["health"]:
        return None
    opts = rest[1:]
    if len(set(opts)) != len(opts) or not set(opts) <= _OPTIONS:
        return None
    if {"--live", "--ready"} <= set(opts):
        return None
    json_mode = json_mode or "--json" in opts
    if not json_mode and not _plain(sys.stdout):
        return None
    return ("live" if "--live" in opts else "ready" if "--ready" in opts else "all"), json_mode


def backup_form(args: list[str]) -> tuple[str | None, bool] | None:
    """(``--output`` or None, JSON?) when ``args`` is a backup the fast path runs."""
    json_mode = args[:1] == ["--json"]  # the global option, before the command
    rest = args[1:] if json_mode else args
    if rest[:1] != ["backup"]:
        return None
    output: str | None = None
    opts = rest[1:]
    while opts:
        opt, opts = opts[0], opts[1:]
        if opt == "--json" and not json_mode:
            json_mode = True
        elif opt in ("-o", "--output") and output is None and opts:
            output, opts = opts[0], opts[1:]
        elif opt.startswith("--output=") and output is None:
            output = opt.removeprefix("--output=")
        else:
            return None  # anything else, or twice: Typer's to parse
        if output is not None and (not output or output.startswith("-")):
            return None
    if not _plain(sys.stderr):
        return None  # a person watching: the progress line
    return output, json_mode


def _backup(output: str | None, json_mode: bool) -> int:
    """``moviectl backup``, as its command runs it (``cli/commands_backup.py``), except that
    pydantic loads while pg_dump runs (``infra/early_settings.py``) where it need not first."""
    from pathlib import Path

    from moviectl.cli.failure import report
    from moviectl.cli.output import Output
    from moviectl.infra.held_signals import Terminated, stopping

    given: Settings | EarlySettings | None = None
    while True:
        try:
            from moviectl.cli.render import render_backup
            from moviectl.core.backups import dump as core
            from moviectl.infra.early_settings import read_early

            if given is None:
                given = read_early()
            if given is None:
                from moviectl.infra.settings import load_settings

                given = load_settings()
            result = core.backup(given, output=None if output is None else Path(output))
            Output(json_mode=json_mode).emit(result, render_backup)
            return 0
        except (Exception, KeyboardInterrupt, Terminated) as exc:
            if isinstance(exc, KeyboardInterrupt | Terminated):
                stopping()  # on the way out: a second signal must not cut the report
            try:  # Ctrl-C while the failure is worked out is the failure then
                error, settings, valid = _as_the_full_cli(exc, given)
            except (KeyboardInterrupt, Terminated) as stop:
                stopping()
                error, settings, valid = stop, None, None
            if valid is not None:
                given = valid  # validated settings never move: once at most
                continue
            return report(
                error, json_mode=json_mode, verbose=False, command="backup", settings=settings
            )


def _as_the_full_cli(
    exc: Exception | KeyboardInterrupt | Terminated, given: Settings | EarlySettings | None
) -> tuple[Exception | KeyboardInterrupt | Terminated, Settings | None, Settings | None]:
    """The error the full CLI reports, the settings it has loaded by then, and the settings
    to run the backup again on (None: report the error).

    The full CLI reads every setting before it does anything: where a backup on early
    settings failed before they were settled, they are settled now, and a bad one is the
    error; one the early read got wrong (``SettingsMoved``) means the run did not happen on
    the right settings, and the caller runs it again on them.
    """
    from moviectl.infra.early_settings import EarlySettings, SettingsMoved
    from moviectl.infra.held_signals import Terminated

    if not isinstance(given, EarlySettings):
        return exc, given, None
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return exc, None, None
    before = given.settled  # settled already: the backup ran on the valid settings
    try:
        return exc, given.settle(), None  # loaded once: if it ran, its answer again
    except SettingsMoved as moved:
        return (exc, moved.settings, None) if before else (moved, None, moved.settings)
    except Exception as bad:  # a bad setting, an unreadable .env
        return bad, None, None


def _plain(stream: TextIO | None) -> bool:
    """Would Rich print to ``stream`` without styling? (no terminal, nothing forcing colour)"""
    if os.environ.get("FORCE_COLOR") is not None or os.environ.get("TTY_COMPATIBLE") == "1":
        return False
    if stream is None:  # the descriptor was closed before start (`2>&-`): the full CLI's
        return False
    try:
        return not stream.isatty()
    except ValueError:  # closed
        return False


def _live(json_mode: bool) -> int | None:
    """``health --live``, as the full CLI's reachable check answers it; None: the full CLI."""
    from moviectl.infra import libpq_syntax as pq
    from moviectl.infra.probe import reachable

    try:  # the same reader and rules as the full CLI; anything off, and it explains
        values = pq.raw_settings()
        t = pq.resolve_fields(values)
        timeout = pq.connect_timeout_of(values.get("connect_timeout"))
    except Exception as exc:
        from moviectl.infra.errors import MoviectlError  # only now: its enum costs ~3 ms

        if isinstance(exc, MoviectlError):
            return None
        raise
    started = time.perf_counter()
    status, detail, code, data = reachable(
        t["host"], t["port"], t["user"], t["database"], float(timeout)
    )
    ms = round((time.perf_counter() - started) * 1000, 2)
    check = {
        "name": "reachable",
        "status": status,
        "latency_ms": ms,
        "detail": detail,
        "exit_code": code,
        "data": data,
    }
    doc: dict[str, object] = {  # HealthReport's document: its fields, then ok and exit_code
        "url": pq.build_url(t),
        "db_host": t["host"],
        "db_name": t["database"],
        "checks": [check],
        "elapsed_ms": ms,
        "ok": status == "pass",
        "exit_code": code,
    }
    _print(doc, json_mode)
    return code


def _health(which: str, json_mode: bool) -> int | None:
    """``health [--ready]``: the checks; None hands the invocation to the full CLI."""
    from moviectl.infra.conninfo import connect_timeout_of, raw_settings, resolve_target
    from moviectl.infra.errors import MoviectlError

    try:  # the same reader and rules as the full CLI; anything off, and it explains
        values = raw_settings()
        target = resolve_target(values)
        timeout = connect_timeout_of(values.get("connect_timeout"))
    except MoviectlError:
        return None
    from dataclasses import asdict

    from moviectl.core.health import checks

    names = list(checks.READY if which == "ready" else checks.CHECKS)
    report = checks.run_checks(target, timeout, names)
    _print({**asdict(report), "ok": report.ok, "exit_code": report.exit_code}, json_mode)
    return report.exit_code


def _print(doc: dict[str, object], json_mode: bool) -> None:
    """Print the report's JSON document, or its lines."""
    if json_mode:
        import json

        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        from moviectl.cli.health_text import doc_lines

        sys.stdout.write("\n".join(doc_lines(doc)) + "\n")
    sys.stdout.flush()


def main() -> None:
    try:
        _main()
    except BrokenPipeError:  # a fast path's reader left (`moviectl --json health | head`)
        from moviectl.cli.failure import reader_gone, stdout_reader_gone

        if not stdout_reader_gone():
            raise
        sys.exit(reader_gone())


def _main() -> None:
    args = sys.argv[1:]
    fast = not os.environ.get("MOVIECTL_NO_FASTPATH")
    form = fast_form(args) if fast else None
    if form is not None and form[0] == "live":
        code = _live(form[1])
        if code is not None:
            sys.exit(code)
    _no_final_collection()
    if form is not None and form[0] != "live":
        code = _health(*form)
        if code is not None:
            sys.exit(code)
    import signal

    # SIGTERM unwinds like an exception, so temp files are removed, child tools killed and
    # drill databases dropped on the way out (exit 143, as a shell reports SIGTERM).
    from moviectl.infra.held_signals import terminate

    signal.signal(signal.SIGTERM, terminate)
    backup = backup_form(args) if fast else None
    if backup is not None:
        sys.exit(_backup(*backup))
    from moviectl.cli.app import main as cli_main

    cli_main()


def _no_final_collection() -> None:
    """Spare the interpreter's last garbage collection on the way out (~45 ms here, once
    pydantic and psycopg are loaded: a third of an idle command's time).

    At exit, after every other atexit callback (the last registered runs first), every
    object left is frozen, so the collections the interpreter runs while it tears its
    modules down skip them. What reference counting frees still is freed (files, sockets,
    connections), and every command closes what it opened before it returns; only
    unreachable cycles are left to the operating system, which reclaims the process.
    Registered for the exit only: a test that calls ``main()`` in its own process keeps
    collecting normally until then. (``health --live`` loads too little to need it.)
    """
    import atexit
    import gc

    atexit.register(gc.freeze)
