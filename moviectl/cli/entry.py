"""The console script's entry, with a fast path for ``moviectl health --live [--json]``.

A container healthcheck runs that every few seconds, so it must cost about what
``pg_isready`` costs: this path imports neither Typer nor pydantic, reads the same
MOVIE_* variables and ``.env`` with the same defaults (``moviectl.infra.conninfo.DEFAULTS``),
and falls back to the full CLI for anything it does not handle exactly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_FORMS = ({"health", "--live"}, {"health", "--live", "--json"})


def _live(json_mode: bool) -> int | None:
    from moviectl.infra.conninfo import DEFAULTS, ENV_PREFIX, DbTarget, parse_db_url, read_dotenv
    from moviectl.infra.errors import MoviectlError

    env = {k.upper(): v for k, v in read_dotenv(Path(".env")).items() if v is not None}
    env.update({k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)})

    def get(name: str) -> str:
        return str(env.get(ENV_PREFIX + name.upper(), DEFAULTS[name]))

    try:
        timeout = int(get("connect_timeout"))
        url = env.get("MOVIE_DATABASE_URL")
        if url:
            target = parse_db_url(url, "MOVIE_DATABASE_URL")
        else:
            port = int(get("db_port"))
            target = DbTarget(
                get("db_host"), port, get("db_user"), get("db_password"), get("db_name")
            )
        if timeout < 1 or not 0 < target.port < 65536:
            return None
    except (ValueError, MoviectlError):
        return None  # let the full CLI explain the bad setting
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
