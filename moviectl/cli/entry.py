"""The console script's entry, with a fast path for ``moviectl health --live [--json]``.

A container healthcheck runs that every few seconds, so it must cost about what
``pg_isready`` costs: this path imports neither Typer nor pydantic. It reads settings
with the full CLI's own reader and rules (``conninfo.raw_settings``, ``resolve_target``)
and hands anything it would reject to the full CLI, which explains it with the same code.
"""

from __future__ import annotations

import os
import sys

_FORMS = ({"health", "--live"}, {"health", "--live", "--json"})


def _live(json_mode: bool) -> int | None:
    from moviectl.infra.conninfo import connect_timeout_of, raw_settings, resolve_target
    from moviectl.infra.errors import MoviectlError

    try:  # the same reader and rules as the full CLI; anything off, and it explains
        values = raw_settings()
        target = resolve_target(values)
        timeout = connect_timeout_of(values.get("connect_timeout"))
    except MoviectlError:
        return None
    from moviectl.core.health.checks import live_report

    report = live_report(target, float(timeout))
    if json_mode:
        import json
        from dataclasses import asdict

        doc = {**asdict(report), "ok": report.ok, "exit_code": report.exit_code}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        check = report.checks[0]
        mark = "✓" if check.status == "pass" else "✗"
        sys.stdout.write(
            f"database: {report.url}\n  {mark} {check.name:<11} "
            f"{check.latency_ms:>7.1f} ms  {check.detail}\n"
        )
    return report.exit_code


def main() -> None:
    args = sys.argv[1:]
    if (
        set(args) in _FORMS
        and len(args) == len(set(args))
        and not os.environ.get("MOVIECTL_NO_FASTPATH")
    ):
        code = _live("--json" in args)
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
