"""`moviectl testdb create | drop | list | prune | template`."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.render import TestDatabases, render_prune, render_testdb, render_testdbs
from moviectl.infra.errors import UsageError

testdb_app = new_typer(
    "Throwaway test databases (`movies_test_<hex>`) cloned from a migrated template.",
    no_args_is_help=True,
)


@testdb_app.command("create")
def testdb_create(
    ctx: typer.Context,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Expire after this long (90s, 30m, 2h, 1d).")
    ] = None,
    seed_sample: Annotated[
        int | None, typer.Option("--seed-sample", min=1, help="Insert N sample movies.")
    ] = None,
    print_url: Annotated[
        bool, typer.Option("--print-url", help="Print only the full URL (password included).")
    ] = False,
) -> None:
    """Create a fresh, fully migrated test database (a clone of the template).

    Example: `export MOVIE_DATABASE_URL_TEST=$(moviectl testdb create --ttl 2h --print-url)`
    """
    from moviectl.core import testdb

    settings = settings_of(ctx)
    life = testdb.parse_ttl(ttl) if ttl else None
    if not seed_sample:
        db = testdb.create(settings, ttl=life)
    else:
        from moviectl.core.seed import load as seed
        from moviectl.infra.held_signals import held

        made = None
        try:
            template = testdb.ensure_template(settings)  # may migrate: not held
            with held():  # a signal waits for the clone and its name here (a moment)
                made = testdb.create(settings, ttl=life, seeding=True, template=template)
            seed.seed_sample_into(settings, made.full_url or "", seed_sample)
        except BaseException:  # a failure, Ctrl-C, SIGTERM: the half-seeded database goes
            if made is not None:
                with contextlib.suppress(Exception):
                    testdb.drop(settings, [made.name])
            raise
        db = testdb.seeding_done(settings, made, life)
    if print_url:
        typer.echo(db.full_url)
        return
    out(ctx).emit(db, render_testdb)


@testdb_app.command("drop")
def testdb_drop(
    ctx: typer.Context,
    names: Annotated[list[str] | None, typer.Argument(help="Test databases to drop.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Drop every moviectl test database.")] = False,
    yes: YesOpt = False,
) -> None:
    """Drop test databases (only movies_test_<hex> ones moviectl created and marked).

    Example: `moviectl testdb drop movies_test_3f2a9c1b0d4e5f60`, `moviectl testdb drop --all -y`
    """
    from moviectl.core import testdb

    settings = settings_of(ctx)
    if all_ == bool(names):
        raise UsageError("name the databases to drop, or pass --all (not both)")
    if all_:
        confirm(ctx, "Drop every moviectl test database on this server?", yes)
        dropped = testdb.drop_all(settings)
    else:
        dropped = testdb.drop(settings, list(names or []))
    from moviectl.core.testdb_prune import PruneResult

    out(ctx).emit({"dropped": dropped, "kept": []}, lambda c, r: render_prune(c, PruneResult(**r)))


@testdb_app.command("list")
def testdb_list(ctx: typer.Context) -> None:
    """List moviectl's test databases: name, age, size, expiry, template.

    Example: `moviectl testdb list --json | jq -r '.databases[].name'`
    """
    from moviectl.core import testdb

    listed: TestDatabases = {"databases": testdb.list_databases(settings_of(ctx))}
    out(ctx).emit(listed, render_testdbs)


@testdb_app.command("prune")
def testdb_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str | None, typer.Option("--older-than", help="Also drop those older than this (1h, 2d).")
    ] = None,
) -> None:
    """Drop expired test databases (and, with --older-than, old ones) and stale templates.

    A database marked protected (`moviectl db protect`) is kept and listed as such.

    Example: `moviectl testdb prune --older-than 1d` (a nightly cron job)
    """
    from moviectl.core import testdb
    from moviectl.core.testdb_prune import prune

    age = testdb.parse_ttl(older_than) if older_than else None
    out(ctx).emit(prune(settings_of(ctx), older_than=age), render_prune)


@testdb_app.command("template")
def testdb_template(ctx: typer.Context) -> None:
    """Build (once) the migrated template that test databases are cloned from.

    Example: `moviectl testdb template` (warm it up before a parallel test run)
    """
    from moviectl.core import testdb

    name = testdb.ensure_template(settings_of(ctx))
    out(ctx).emit({"template": name}, lambda c, r: c.print(f"template: {r['template']}"))
