"""The console script's entry, with a fast path for ``moviectl health``'s one-shot forms.

A container healthcheck runs ``moviectl health --live`` every few seconds, and probes and
scripts run ``moviectl health [--ready] [--json]``: these must cost about what the
questions cost (``pg_isready``, one login and a few queries), so this path imports
neither Typer, Rich nor SQLAlchemy, and ``--live`` neither psycopg nor pydantic. It reads
the settings with the full CLI's own reader and rules (``conninfo.raw_settings``,
``resolve_target``), runs the same checks (``core.health.checks``) and prints the same
JSON document, or the same lines (``cli/health_text.py``) that the full CLI prints where
there is no terminal.

Anything else goes to the full CLI: another option, a terminal (people get colour),
``FORCE_COLOR``/``TTY_COMPATIBLE``, ``MOVIECTL_NO_FASTPATH=1``, or connection settings the
reader rejects (the full CLI explains them with the same code). The fast path reads only
the connection settings and ``MOVIE_CONNECT_TIMEOUT``: a bad value in another setting
(``MOVIE_POOL_SIZE=x``) fails every other command, not this probe.
"""

from __future__ import annotations

import os
import sys

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
    if not json_mode and not _plain_stdout():
        return None
    return ("live" if "--live" in opts else "ready" if "--ready" in opts else "all"), json_mode


def _plain_stdout() -> bool:
    """Would Rich print without styling here? (no terminal, nothing forcing colour)"""
    if os.environ.get("FORCE_COLOR") is not None or os.environ.get("TTY_COMPATIBLE") == "1":
        return False
    try:
        return not sys.stdout.isatty()
    except ValueError:  # closed
        return False


def _health(which: str, json_mode: bool) -> int | None:
    """Answer ``health`` here; None hands the invocation to the full CLI."""
    from moviectl.infra.conninfo import connect_timeout_of, raw_settings, resolve_target
    from moviectl.infra.errors import MoviectlError

    try:  # the same reader and rules as the full CLI; anything off, and it explains
        values = raw_settings()
        target = resolve_target(values)
        timeout = connect_timeout_of(values.get("connect_timeout"))
    except MoviectlError:
        return None
    from moviectl.core.health import checks

    if which == "live":
        report = checks.live_report(target, float(timeout))
    else:
        names = list(checks.READY if which == "ready" else checks.CHECKS)
        report = checks.run_checks(target, timeout, names)
    if json_mode:
        import json
        from dataclasses import asdict

        doc = {**asdict(report), "ok": report.ok, "exit_code": report.exit_code}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        from moviectl.cli.health_text import health_lines

        sys.stdout.write("\n".join(health_lines(report)) + "\n")
    sys.stdout.flush()
    return report.exit_code


def main() -> None:
    args = sys.argv[1:]
    form = fast_form(args) if not os.environ.get("MOVIECTL_NO_FASTPATH") else None
    if form is not None:
        code = _health(*form)
        if code is not None:
            sys.exit(code)
    import signal

    # SIGTERM unwinds like an exception, so temp files are removed, child tools killed and
    # drill databases dropped on the way out (exit 143, as a shell reports SIGTERM).
    signal.signal(signal.SIGTERM, _terminated)
    from moviectl.cli.app import main as cli_main

    cli_main()


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
