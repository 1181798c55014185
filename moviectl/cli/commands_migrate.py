"""`moviectl migrate [status | history | down | new | check | lint]`."""

from __future__ import annotations

from typing import Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.render import (
    Revisions,
    render_drift,
    render_history,
    render_migrate,
    render_new_migration,
    render_status,
)
from moviectl.infra.errors import MigrationsBehind

migrate_app = new_typer(
    "Run and inspect schema migrations (Alembic, driven from settings); without a "
    "subcommand, upgrade to head.\n\nExample: `moviectl migrate` or `moviectl migrate status`"
)


@migrate_app.callback(invoke_without_command=True)
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Target revision (default: head).")] = "head",
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the SQL instead of running it (offline).")
    ] = False,
) -> None:
    """Upgrade the database to the newest schema (or `--to REV`).

    Takes a PostgreSQL advisory lock: a concurrent migration waits up to
    MOVIE_MIGRATE_LOCK_TIMEOUT seconds, then fails naming the holder.

    Example: `moviectl migrate` or `moviectl migrate --to 0001 --sql > upgrade.sql`
    """
    if ctx.invoked_subcommand is not None:
        return
    from moviectl.core.migrations import runner as migrations

    settings = settings_of(ctx)
    o = out(ctx)
    if sql:
        text = migrations.offline_sql(settings, to)
        if o.json_mode:
            o.emit({"to": to, "sql": text})
        else:
            typer.echo(text, nl=False)
        return
    with o.status(f"migrating {settings.masked_url} to {to}"):
        result = migrations.upgrade(settings, to)
    o.emit(result, render_migrate)


@migrate_app.command("status")
def migrate_status(ctx: typer.Context) -> None:
    """Show the current and head revisions and what is pending.

    Exits 0 when up to date and 6 when migrations are pending.

    Example: `moviectl migrate status || moviectl migrate`
    """
    from moviectl.core.migrations.status import status  # not runner: no Alembic import

    result = status(settings_of(ctx))
    o = out(ctx)
    o.emit(result, render_status)
    if not result.up_to_date:
        raise typer.Exit(int(MigrationsBehind.exit_code))


@migrate_app.command("history")
def migrate_history(ctx: typer.Context) -> None:
    """List every revision, oldest first, marking head and the database's current one.

    Example: `moviectl migrate history`
    """
    from moviectl.core.migrations import runner as migrations

    revisions: Revisions = {"revisions": migrations.history(settings_of(ctx))}
    out(ctx).emit(revisions, render_history)


@migrate_app.command("down")
def migrate_down(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Revision to go down to (`base`: drop all).")],
    yes: YesOpt = False,
) -> None:
    """Downgrade to an older revision (asks first: this can drop data).

    Example: `moviectl migrate down --to base --yes`
    """
    from moviectl.core.migrations import runner as migrations
    from moviectl.core.migrations import scripts

    settings = settings_of(ctx)
    scripts.resolve_revision(scripts.script_directory(), to)  # fail fast on a typo
    confirm(ctx, f"Downgrade {settings.masked_url} to {to}? Data in dropped tables is lost.", yes)
    o = out(ctx)
    with o.status(f"downgrading {settings.masked_url} to {to}"):
        result = migrations.downgrade(settings, to)
    o.emit(result, render_migrate)


@migrate_app.command("new")
def migrate_new(
    ctx: typer.Context,
    message: Annotated[str, typer.Argument(help="What the migration does (names the file).")],
    autogenerate: Annotated[
        bool,
        typer.Option("--autogenerate", help="Compare the models with the database (the default)."),
    ] = False,
    empty: Annotated[
        bool, typer.Option("--empty", help="An empty upgrade/downgrade to write by hand.")
    ] = False,
) -> None:
    """Write the next migration (`0003_add_director.py`), ruff-formatted.

    Autogenerates from the models against the database (which must be at head) and
    refuses when they agree, unless `--empty`. Review it, then `moviectl migrate lint`.

    Example: `moviectl migrate new "add director to movies"`
    """
    from moviectl.core.migrations import authoring
    from moviectl.infra.errors import UsageError

    if autogenerate and empty:
        raise UsageError("--autogenerate and --empty exclude each other", hint="pick one")
    settings = settings_of(ctx)
    o = out(ctx)
    with o.status(f"comparing the models with {settings.masked_url}"):
        result = authoring.new_migration(settings, message, empty=empty)
    o.emit(result, render_new_migration)


@migrate_app.command("check")
def migrate_check(ctx: typer.Context) -> None:
    """Compare the models with the live database; exit 1 if they drifted apart.

    Example: `moviectl migrate check` (in CI, after `moviectl migrate`)
    """
    from moviectl.core.migrations import drift

    report = drift.check(settings_of(ctx))
    out(ctx).emit(report, render_drift)
    if not report.clean:
        raise typer.Exit(1)


@migrate_app.command("lint")
def migrate_lint(
    ctx: typer.Context,
    range_: Annotated[
        str | None,
        typer.Option(
            "--range",
            metavar="A:B",
            help="Lint the migrations after A up to B, offline (e.g. base:head). "
            "Default: the pending ones, weighed by the live tables' sizes.",
        ),
    ] = None,
) -> None:
    """Find migrations that lock tables or break running code, before they run; exit 1 on errors.

    Renders the migrations to SQL offline and reads it with PostgreSQL's own parser. With a
    database, a finding on an empty or small table is info or a warning; offline, an error.
    Acknowledge one on purpose: `# moviectl-lint: allow RULE -- reason` on or above its line.

    Example: `moviectl migrate lint` or, in CI, `moviectl migrate lint --range 0002:head`
    """
    from moviectl.cli.render_lint import render_lint
    from moviectl.core.migrations import lint

    report = lint.lint(settings_of(ctx), range_)
    out(ctx).emit(report, render_lint)
    if not report.ok:
        raise typer.Exit(1)
