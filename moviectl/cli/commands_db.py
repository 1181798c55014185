"""`moviectl db up | down | status | logs | shell`."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, finite, new_typer, out, settings_of
from moviectl.cli.output import write_stdout
from moviectl.cli.render import render_down, render_server_status, render_up

if TYPE_CHECKING:
    from moviectl.cli.output import Output
    from moviectl.core.servers.base import Backend

db_app = new_typer(
    "Run the database server: Docker (compose file) or embedded.", no_args_is_help=True
)

TimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=1,
        max=3600,
        callback=finite,
        help="Seconds to wait for the server to accept logins.",
    ),
]


def _backend(ctx: typer.Context, for_up: bool = False) -> tuple[Backend, Output]:
    from moviectl.cli.output import PullProgress
    from moviectl.core.servers import get_backend

    o = out(ctx)
    progress = PullProgress(o) if o.interactive else None
    return get_backend(settings_of(ctx), progress=progress, for_up=for_up), o


@db_app.command("up")
def db_up(
    ctx: typer.Context,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Return only when logins work.")
    ] = True,
    timeout: TimeoutOpt = 90,
) -> None:
    """Start the server (idempotent) and wait until the app database accepts logins.

    Example: `moviectl db up` or `MOVIE_DB_BACKEND=embedded moviectl db up --timeout 30`
    """
    backend, o = _backend(ctx, for_up=True)
    with o.status(f"starting PostgreSQL ({backend.name})"):
        result = backend.up(wait=wait, timeout=timeout)
    o.emit(result, render_up)


@db_app.command("down")
def db_down(
    ctx: typer.Context,
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete the data (asks first).")
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Stop the server; data stays unless --volumes.

    Example: `moviectl db down` or `moviectl db down --volumes --yes` (deletes all data)
    """
    backend, o = _backend(ctx)
    if volumes:
        confirm(ctx, f"Delete all data of the {backend.name} database server?", yes)
    o.emit(backend.down(volumes=volumes), render_down)


@db_app.command("status")
def db_status(ctx: typer.Context) -> None:
    """Show backend, state, version, uptime, data size and connections.

    Exits 0 when running, 3 when stopped or unreachable, 4 when it refuses the login.

    Example: `moviectl db status --json | jq .state`
    """
    backend, o = _backend(ctx)
    status = backend.status()
    o.emit(status, render_server_status)
    if status.state != "running":
        raise typer.Exit(3)
    if status.exit_code:  # it runs, but will not let us in (password, database, …)
        raise typer.Exit(status.exit_code)


@db_app.command("logs")
def db_logs(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    tail: Annotated[
        int, typer.Option("--tail", "-n", min=0, max=1_000_000, help="Lines from the end.")
    ] = 50,
) -> None:
    """Print the server's log (container logs or the embedded server's log file).

    With --json: one document ({"lines": [...]}), or one JSON line per log line with -f.

    Example: `moviectl db logs --tail 100` or `moviectl db logs -f`
    """
    import json as json_lib

    backend, o = _backend(ctx)
    lines = backend.logs(tail=tail, follow=follow)
    if o.json_mode and not follow:
        o.emit({"backend": backend.name, "lines": list(lines)})
        return
    if follow:
        o.info(f"following the {backend.name} server's log (Ctrl-C stops)")
    for line in lines:
        if o.json_mode:
            write_stdout(json_lib.dumps({"line": line}) + "\n")
        else:
            typer.echo(line)


@db_app.command("shell")
def db_shell(
    ctx: typer.Context,
    psql: Annotated[bool, typer.Option("--psql", help="Use psql instead of pgcli.")] = False,
) -> None:
    """Open pgcli (or psql) on the app database; the password is passed in the environment.

    Example: `moviectl db shell` or `echo 'select count(*) from movies' | moviectl db shell --psql`
    """
    from moviectl.core.shell import shell_command

    argv, env = shell_command(settings_of(ctx), psql=psql)
    raise typer.Exit(subprocess.call(argv, env=env))
