"""``moviectl health --live`` ahead of Typer: container healthchecks run it every few seconds.

The same settings (``load_settings``), check and report (``run_health`` with the live
selection), output (the ``--json`` document of ``jsonable``; the lines of ``health_text``)
and failure handler (``cli/failure.py``) as every other command; only Typer and Rich are not
loaded. Any other argv, ``-v`` or ``--env-file`` included, goes to Typer, whose ``health
--live`` calls the same functions and prints the same lines or document.
"""

from __future__ import annotations

import sys

from moviectl.infra.held_signals import Terminated


def live_form(args: list[str]) -> bool | None:
    """Is ``args`` ``[--json] health --live [--json]``? (JSON mode, or None: it is not)"""
    global_json = args[:1] == ["--json"]
    rest = args[1:] if global_json else args
    if rest[:1] != ["health"] or "--live" not in rest[1:]:
        return None
    opts = rest[1:]
    allowed = [["--live"]] if global_json else [["--live"], ["--live", "--json"]]
    if sorted(opts) not in [sorted(a) for a in allowed]:
        return None
    return global_json or "--json" in opts


def run(json_mode: bool) -> int:
    """Answer ``health --live``: print the report (or the failure) and return the exit code."""
    try:
        from moviectl.core.health.checks import LIVE, run_health
        from moviectl.infra.settings import load_settings

        report = run_health(load_settings(), list(LIVE))
        if json_mode:
            import json

            from moviectl.infra.jsonable import jsonable

            text = json.dumps(jsonable(report), indent=2)
        else:
            from moviectl.cli.health_text import health_lines

            text = "\n".join(health_lines(report))
        if sys.stdout is not None:  # closed before start (`>&-`): the answer is the code
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return report.exit_code
    except (Exception, KeyboardInterrupt, Terminated) as exc:
        from moviectl.cli.failure import report as failed

        return failed(exc, json_mode=json_mode, verbose=False, command="health", settings=None)
