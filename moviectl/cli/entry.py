"""The console script: ``health --live`` (``cli/live.py``), else the Typer app."""

from __future__ import annotations

import sys


def main() -> None:
    import signal

    from moviectl.infra.held_signals import terminate

    # SIGTERM unwinds like an exception, so temp files are removed, child tools killed and
    # drill databases dropped on the way out (exit 143, as a shell reports SIGTERM).
    signal.signal(signal.SIGTERM, terminate)
    from moviectl.cli.live import live_form

    json_mode = live_form(sys.argv[1:])
    if json_mode is not None:
        from moviectl.cli.live import run

        sys.exit(run(json_mode))
    from moviectl.cli.app import main as cli_main

    try:
        cli_main()
    finally:
        _quick_exit()


def _quick_exit() -> None:
    """The command is done: spare the interpreter's shutdown its collections of every
    object psycopg, Typer and Rich made (~0.1 s quiet, 0.25 s on a busy machine, paid by
    every command after its work). Frozen objects are still freed as the modules go; only
    the cycle collector skips them. atexit handlers and ``weakref.finalize`` run as before."""
    import gc

    gc.freeze()
