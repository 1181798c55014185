"""`moviectl health`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import finite, out, settings_of
from moviectl.cli.render import render_health

if TYPE_CHECKING:
    from moviectl.cli.output import Output
    from moviectl.infra.settings import Settings


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
    timeout: Annotated[
        float, typer.Option("--timeout", min=0, max=86400, callback=finite, help="For --wait.")
    ] = 60,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", min=0.05, max=3600, callback=finite, help="First retry delay (--wait)."
        ),
    ] = 0.5,
    serve: Annotated[
        int | None,
        typer.Option(
            "--serve", min=1, max=65535, help="Serve /healthz, /livez, /readyz, /metrics."
        ),
    ] = None,
    bind: Annotated[str, typer.Option("--bind", help="Address for --serve.")] = "127.0.0.1",
    details: Annotated[
        bool | None,
        typer.Option(
            "--details/--no-details",
            help="--serve: show versions, user, sizes, errors (default: on loopback only).",
        ),
    ] = None,
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
    o = out(ctx)
    if serve is not None:
        _serve(settings, bind, serve, details, o)
        return
    if wait:
        with o.status("waiting for the database") as _:
            report = core.wait_healthy(settings, names, timeout, interval)
    else:
        report = core.run_health(settings, names)
    o.emit(report, render_health)
    raise typer.Exit(report.exit_code)


def _connection_cap() -> int:
    """How many connections ``--serve`` keeps open: MAX_CONNECTIONS, within the file limit
    (raised toward its hard limit first)."""
    import resource

    from moviectl.cli.http_protocol import MAX_CONNECTIONS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = MAX_CONNECTIONS + 128
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(16, min(MAX_CONNECTIONS, soft - 128))


def _serve(settings: Settings, bind: str, port: int, details: bool | None, o: Output) -> None:
    """uvicorn on a socket bound here (so a taken port or a bad host is our error, with its
        exit code), on an event loop that bounds connections and request heads and closes idle
        and slow ones (``cli/http_protocol.py``); every log line is one escaped line, written
    off the event loop (``cli/serve_log.py``)."""
    import asyncio
    import logging
    import socket

    # what the first round of checks imports: loaded before "serving", never during a probe
    import prometheus_client  # noqa: F401
    import psycopg  # noqa: F401
    import sqlalchemy.pool  # noqa: F401
    import uvicorn

    from moviectl.cli.http_protocol import MAX_HEAD, DeadlineLoop
    from moviectl.cli.serve_log import BackgroundLog
    from moviectl.core.health.http import create_app

    loopback = bind in ("127.0.0.1", "::1", "localhost")
    show = loopback if details is None else details
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    # proto spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and
    # without it every response (head and body written apart) waited 40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((socket.getaddrinfo(bind, port, family, socket.SOCK_STREAM)[0][4][0], port))
        sock.listen(2048)  # from here on, "serving" is true: early clients wait in the backlog
    except OSError:
        sock.close()
        raise
    cap = _connection_cap()
    config = uvicorn.Config(
        create_app(settings, details=show),
        http="h11",
        ws="none",
        log_config=None,
        access_log=False,  # the app logs each request with its trace id
        timeout_keep_alive=5,
        timeout_graceful_shutdown=3,
        # no limit_concurrency: it counts idle connections (257 made every probe 503); the
        # loop bounds open connections instead, making room by closing the oldest idle one
        h11_max_incomplete_event_size=MAX_HEAD + 1024,  # the loop answers 431 first
        server_header=False,
        date_header=False,
        lifespan="on",
    )
    o.info(
        f"serving http://{bind}:{sock.getsockname()[1]}/healthz, /livez, /readyz, /metrics "
        f"(details {'shown' if show else 'hidden'}; Ctrl-C stops)"
    )
    # the line names none of them: a record made on the event loop skips looking them up
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    log = BackgroundLog()
    logging.basicConfig(level=logging.INFO, handlers=[log])
    try:  # what uvicorn.Server.run does, on an event loop that guards the connections
        with asyncio.Runner(loop_factory=lambda: DeadlineLoop(cap)) as runner:
            runner.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:  # the log written (or given up on) before the exit's own last line
        log.close()
        logging.getLogger().removeHandler(log)  # later records: logging's last resort
