"""`moviectl migrate [status | history | down | redo | stamp | dump | new | check | lint]`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.protection import OverrideOpt, touching
from moviectl.cli.render import (
    Revisions,
    render_drift,
    render_history,
    render_migrate,
    render_new_migration,
    render_status,
)
from moviectl.infra.errors import MigrationsBehind

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.migrations.dump import DumpResult
    from moviectl.core.migrations.verbs import RedoResult, StampResult

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
    to: Annotated[
        str | None, typer.Option("--to", help="Revision to go down to (`base`: drop all).")
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, max=10_000, help="Go down N revisions.")
    ] = None,
    yes: YesOpt = False,
    override: OverrideOpt = False,
) -> None:
    """Downgrade to an older revision, or N steps (asks first: this can drop data).

    Refuses a protected database (`moviectl db protect`, exit 5) without the override.

    Example: `moviectl migrate down --steps 1` or `moviectl migrate down --to base --yes`
    """
    from moviectl.core.migrations import scripts, verbs
    from moviectl.infra.errors import UsageError
    from moviectl.infra.protect import guard

    if (to is None) == (steps is None):
        raise UsageError("give --to REV or --steps N (one of them)", hint="e.g. --steps 1")
    settings = settings_of(ctx)
    if to is not None:
        scripts.resolve_revision(scripts.script_directory(), to)  # fail fast on a typo
    guard(settings, f"migrate down {'to ' + to if to else f'{steps} step(s)'}", override=override)
    to = to if to is not None else verbs.steps_below(settings, steps or 1)
    confirm(ctx, f"Downgrade {touching(settings)} to {to}? Data in dropped tables is lost.", yes)
    o = out(ctx)
    with o.status(f"downgrading {settings.masked_url} to {to}"):
        result = verbs.guarded_downgrade(settings, to, override=override)
    o.emit(result, render_migrate)


@migrate_app.command("redo")
def migrate_redo(ctx: typer.Context, yes: YesOpt = False, override: OverrideOpt = False) -> None:
    """Run the newest applied migration's downgrade, then its upgrade again (asks first).

    Example: `moviectl migrate redo --yes` (after editing the migration you just wrote)
    """
    from moviectl.core.migrations import verbs
    from moviectl.infra.protect import guard

    settings = settings_of(ctx)
    guard(settings, "migrate redo (a downgrade)", override=override)
    confirm(ctx, f"Redo the newest migration of {touching(settings)}? Its downgrade runs.", yes)
    o = out(ctx)
    with o.status(f"redoing the newest migration of {settings.masked_url}"):
        result = verbs.redo(settings, override=override)
    o.emit(result, render_redo)


@migrate_app.command("stamp")
def migrate_stamp(
    ctx: typer.Context,
    rev: Annotated[str, typer.Argument(help="The revision to record (head, base, an id).")],
) -> None:
    """Record REV as the database's revision without running migrations.

    For a database whose schema was made outside migrations (restored, or by hand).

    Example: `moviectl migrate stamp head`
    """
    from moviectl.core.migrations import verbs

    o = out(ctx)
    result = verbs.stamp(settings_of(ctx), rev)
    o.emit(result, render_stamp)


@migrate_app.command("dump")
def migrate_dump(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write.")] = Path(
        "schema.sql"
    ),
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if the file differs (CI)."),
    ] = False,
) -> None:
    """Write the migrated schema as a deterministic schema.sql (pg_dump --schema-only).

    The same bytes on every run and on PostgreSQL 15-18: check it in, and let CI run
    `moviectl migrate dump --check` after `moviectl migrate`.

    Example: `moviectl migrate dump` or `moviectl migrate dump --check -o db/schema.sql`
    """
    from moviectl.core.migrations import dump

    result = dump.dump(settings_of(ctx), output, check=check)
    out(ctx).emit(result, render_dump)
    if check and result.changed:
        raise typer.Exit(1)


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


def render_redo(c: Console, r: RedoResult) -> None:
    render_migrate(c, r.down)
    render_migrate(c, r.up)


def render_stamp(c: Console, r: StampResult) -> None:
    c.print(
        f"[green]✓[/] stamped {r.database} at {r.to_revision or 'base'} "
        f"(was {r.from_revision or 'base'}); no migration ran"
    )


def render_dump(c: Console, r: DumpResult) -> None:
    if r.checked:
        verdict = "[red]✗ differs from[/]" if r.changed else "[green]✓ matches[/]"
        c.print(f"{verdict} {r.path} (the schema of {r.database})")
        if r.changed:
            c.print("run [bold]moviectl migrate dump[/] and commit the file")
        return
    what = "wrote" if r.changed else "unchanged:"
    c.print(f"[green]✓[/] {what} {r.path} ({r.bytes} bytes, sha256 {r.sha256[:12]})")
