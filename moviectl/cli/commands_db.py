"""`moviectl db up | down | status | logs | shell | reset | protect`."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, finite, new_typer, out, settings_of
from moviectl.cli.output import write_stdout
from moviectl.cli.protection import OverrideOpt, touching
from moviectl.cli.render import render_down, render_server_status, render_up

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.cli.output import Output
    from moviectl.core.protect import Protection
    from moviectl.core.reset import ResetResult
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
    override: OverrideOpt = False,
) -> None:
    """Stop the server; data stays unless --volumes (refused when a database on the
    server is protected: `moviectl db protect`).

    Example: `moviectl db down` or `moviectl db down --volumes --yes` (deletes all data)
    """
    backend, o = _backend(ctx)
    if volumes:
        from moviectl.infra.protect import guard

        settings = settings_of(ctx)
        guard(settings, "delete the server's data", override=override, server_wide=True)
        t = settings.target()
        confirm(
            ctx,
            f"Delete all data of the {backend.name} database server at {t.host}:{t.port} "
            f"(every database on it, {touching(settings)} among them)?",
            yes,
        )
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
    command: Annotated[
        str | None,
        typer.Option("--command", "-c", help="Run one statement and exit (pgcli and psql -c)."),
    ] = None,
) -> None:
    """Open pgcli (or psql) on the app database; the password is passed in the environment.

    Example: `moviectl db shell` or `moviectl db shell --psql -c 'select count(*) from movies'`
    """
    from moviectl.core.shell import shell_command

    argv, env = shell_command(settings_of(ctx), psql=psql, command=command)
    raise typer.Exit(subprocess.call(argv, env=env))


@db_app.command("reset")
def db_reset(
    ctx: typer.Context,
    sample: Annotated[
        int, typer.Option("--sample", min=1, max=1_000_000, help="Sample movies to seed.")
    ] = 3,
    no_seed: Annotated[bool, typer.Option("--no-seed", help="Migrate, but seed nothing.")] = False,
    yes: YesOpt = False,
    override: OverrideOpt = False,
) -> None:
    """Drop the app database, create it again, migrate it to head and seed it (asks first).

    Refuses a protected database (`moviectl db protect`, exit 5) without the override.

    Example: `moviectl db reset --yes` or `moviectl db reset --no-seed --yes`
    """
    from moviectl.core.reset import preflight, reset

    settings = settings_of(ctx)
    preflight(settings, override=override)
    confirm(ctx, f"Drop and recreate {touching(settings)}? All its data is lost.", yes)
    o = out(ctx)
    with o.status(f"resetting {settings.masked_url}"):
        result = reset(settings, sample=None if no_seed else sample, override=override)
    o.emit(result, render_reset)


@db_app.command("protect")
def db_protect(
    ctx: typer.Context,
    unprotect: Annotated[
        bool, typer.Option("--unprotect", help="Lift the mark (asks first).")
    ] = False,
    environment: Annotated[
        str, typer.Option("--environment", "-e", help="The environment's name, stored.")
    ] = "production",
    yes: YesOpt = False,
) -> None:
    """Mark the app database as a protected environment, stored in the database itself.

    Destructive commands (migrate down/redo, seed --reset, db reset, db down --volumes,
    restore --force, testdb drop) refuse it with exit 5 unless given
    --i-know-this-is-production or MOVIE_ALLOW_PROTECTED=<database>. A backup restored
    elsewhere is not protected.

    Example: `moviectl db protect` or `moviectl db protect --unprotect --yes`
    """
    from moviectl.core.protect import protect

    settings = settings_of(ctx)
    if unprotect:
        confirm(ctx, f"Lift the protection of {touching(settings)}?", yes)
    result = protect(settings, None if unprotect else environment)
    out(ctx).emit(result, render_protection)


def render_reset(c: Console, r: ResetResult) -> None:
    from moviectl.cli.render import render_migrate

    c.print(f"[green]✓[/] {'dropped and re' if r.existed else ''}created {r.database}")
    if r.environment:
        c.print(f"[yellow]![/] still protected as {r.environment!r} (the mark was kept)")
    render_migrate(c, r.migrated)
    if r.seeded is not None:
        c.print(f"[green]✓[/] seeded {r.seeded.inserted} movie(s)")
    else:
        c.print(f"[dim]no seed: {r.seed_skipped}[/]")


def render_protection(c: Console, r: Protection) -> None:
    state = f"protected as {r.environment!r}" if r.environment else "not protected"
    change = "now" if r.changed else "already"
    c.print(f"[green]✓[/] {r.database} is {change} {state} ({r.setting}, in the database)")
