"""`moviectl health`."""

from __future__ import annotations

from typing import Annotated

import typer

from moviectl.cli.context import JsonOpt, out, settings_of
from moviectl.cli.render import render_health


def health(
    ctx: typer.Context,
    live: Annotated[bool, typer.Option("--live", help="Only: does the server answer?")] = False,
    ready: Annotated[
        bool, typer.Option("--ready", help="reachable, auth, query, migrations.")
    ] = False,
    check: Annotated[
        list[str] | None, typer.Option("--check", help="Run only this check (repeatable).")
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="Skip this check (repeatable).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Retry until healthy or timeout.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="For --wait.")] = 60,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="First retry delay (--wait).")
    ] = 0.5,
    serve: Annotated[
        int | None, typer.Option("--serve", min=1, max=65535, help="Serve GET /healthz.")
    ] = None,
    bind: Annotated[str, typer.Option("--bind", help="Address for --serve.")] = "127.0.0.1",
    json: JsonOpt = False,
) -> None:
    """Check that the app can work against the database: reachable, auth, query,
    migrations, capacity.

    Exit codes: 0 healthy, 1 a check failed or warned, 3 unreachable, 4 login
    refused or database missing, 6 migrations pending.

    Example: `moviectl health --wait --timeout 30` or `moviectl health --live` (a healthcheck)
    """
    from moviectl.core.health import checks as core

    settings = settings_of(ctx)
    names = core.select_checks(live, ready, check, exclude)
    o = out(ctx, json)
    if serve is not None:
        _serve(settings, names, bind, serve, o)
        return
    if wait:
        with o.status("waiting for the database") as _:
            report = core.wait_healthy(settings, names, timeout, interval)
    else:
        report = core.run_health(settings, names)
    o.emit(report, render_health)
    raise typer.Exit(report.exit_code)


def _serve(settings, names, bind, port, o) -> None:
    import logging

    from moviectl.core.health.http import make_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    server = make_server(settings, names, bind, port)
    o.info(f"serving GET http://{bind}:{server.server_address[1]}/healthz (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
