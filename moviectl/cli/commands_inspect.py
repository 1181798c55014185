"""`moviectl inspect …`: one command per question (``core/inspect/registry.py``), made here
from one template each so that every one has `--limit`, `--json` and its own help."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from moviectl.cli.context import MoviectlGroup, YesOpt, confirm, new_typer, out, settings_of
from moviectl.cli.render_inspect import render_diagnose, render_inspect, render_kill


class InspectGroup(MoviectlGroup):
    """An unknown subcommand is answered with the list of the valid ones (there are many)."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:
            valid = ", ".join(self.list_commands(ctx))
            ctx.fail(f"{exc.format_message()} Valid subcommands: {valid}.")


inspect_app = new_typer(
    "What is slow, big, blocked or bloated: the pg-extras set, answered by moviectl.\n\n"
    "Example: `moviectl inspect blocking` or `moviectl inspect diagnose --json`",
    no_args_is_help=True,
    cls=InspectGroup,
)

LimitOpt = Annotated[int, typer.Option("--limit", min=1, max=10000, help="At most this many rows.")]

# name: (what it answers, an example's extra words)
HELP: dict[str, str] = {
    "cache-hit": "Buffer cache hit rate of tables, indexes and the database.",
    "index-usage": "How often each table is read through an index rather than scanned.",
    "unused-indexes": "Indexes never scanned since the statistics were reset (not unique ones).",
    "duplicate-indexes": "Indexes that are the same as another index of their table.",
    "seq-scans": "Sequential scans per table (a missing index shows here).",
    "table-sizes": "Tables by size, TOAST included, indexes not.",
    "index-sizes": "Indexes by size.",
    "total-sizes": "Tables by total size: table, TOAST and indexes.",
    "bloat": "Estimated table bloat (an estimate from the planner's statistics).",
    "vacuum-stats": "Dead rows, last (auto)vacuum and analyze, wraparound age per table.",
    "locks": "Locks held and awaited, waiting ones first.",
    "blocking": "Sessions waiting for a lock, and who they wait for (pg_blocking_pids).",
    "long-running": "Queries and idle transactions open for a while (--min-seconds).",
    "outliers": "Statements by total execution time (pg_stat_statements).",
    "calls": "Statements by number of calls (pg_stat_statements).",
    "connections": "Client connections by state, user, application and client.",
    "replication": "Replication slots and standbys: WAL retained, lag.",
    "settings": "The settings that matter most, their values and where they come from.",
}


def _show(ctx: typer.Context, name: str, **options: Any) -> None:
    from moviectl.core.inspect.model import Options
    from moviectl.core.inspect.registry import run

    result = run(settings_of(ctx), name, Options(**options))
    out(ctx).emit(result, render_inspect)
    if result.unavailable:
        raise typer.Exit(1)


def _make(name: str) -> Any:
    if name == "long-running":

        def command(
            ctx: typer.Context,
            limit: LimitOpt = 50,
            min_seconds: Annotated[
                float,
                typer.Option("--min-seconds", min=0, help="Leave out what is younger."),
            ] = 5.0,
        ) -> None:
            _show(ctx, name, limit=limit, min_seconds=min_seconds)

    else:

        def command(ctx: typer.Context, limit: LimitOpt = 50) -> None:  # type: ignore[misc]
            _show(ctx, name, limit=limit)

    command.__doc__ = (
        f"{HELP[name]}\n\nExample: `moviectl inspect {name}` or `moviectl inspect {name} --json`"
    )
    command.__name__ = name.replace("-", "_")
    return command


for _name in HELP:
    inspect_app.command(_name)(_make(_name))


DIAGNOSE_EXIT = {"green": 0, "yellow": 1, "red": 3}


@inspect_app.command("diagnose")
def diagnose_cmd(
    ctx: typer.Context,
    blocking_seconds: Annotated[
        float, typer.Option(min=0, help="A lock wait this long is an error.")
    ] = 30.0,
    idle_tx_seconds: Annotated[
        float, typer.Option(min=0, help="Idle in a transaction this long is a warning.")
    ] = 60.0,
    long_query_seconds: Annotated[
        float, typer.Option(min=0, help="A query running this long is a warning.")
    ] = 300.0,
    wraparound_pct: Annotated[
        float,
        typer.Option(min=0, max=100, help="Transaction-ID age (% of 2^31) that is an error."),
    ] = 50.0,
    unused_index_bytes: Annotated[
        int, typer.Option(min=0, help="A never-used index this big is a warning.")
    ] = 1024 * 1024,
    cache_hit_pct: Annotated[
        float, typer.Option(min=0, max=100, help="A cache hit rate under this is a warning.")
    ] = 99.0,
    dead_pct: Annotated[
        float, typer.Option(min=0, max=100, help="Dead rows (% of a table) that warn.")
    ] = 20.0,
    slot_wal_bytes: Annotated[
        int, typer.Option(min=0, help="WAL held by an inactive slot that is an error.")
    ] = 1024**3,
    connections_pct: Annotated[
        float, typer.Option(min=0, max=100, help="Share of max_connections that warns.")
    ] = 80.0,
) -> None:
    """Run every check with its threshold: green, yellow or red, each with the fix.

    Exit 0 when all is green, 1 on warnings (yellow), 3 on errors (red).

    Example: `moviectl inspect diagnose` or `moviectl inspect diagnose --idle-tx-seconds 10 --json`
    """
    from moviectl.core.inspect.diagnose import Thresholds, diagnose

    thresholds = Thresholds(
        blocking_seconds=blocking_seconds,
        idle_tx_seconds=idle_tx_seconds,
        long_query_seconds=long_query_seconds,
        wraparound_pct=wraparound_pct,
        unused_index_bytes=unused_index_bytes,
        cache_hit_pct=cache_hit_pct,
        dead_pct=dead_pct,
        slot_wal_bytes=slot_wal_bytes,
        connections_pct=connections_pct,
    )
    report = diagnose(settings_of(ctx), thresholds)
    out(ctx).emit(report, render_diagnose)
    raise typer.Exit(DIAGNOSE_EXIT[report.status])


@inspect_app.command("kill")
def kill_cmd(
    ctx: typer.Context,
    pid: Annotated[int, typer.Argument(min=1, help="The session's process id.")],
    terminate: Annotated[
        bool,
        typer.Option("--terminate", help="End the whole session, not only its query."),
    ] = False,
    yes: YesOpt = False,
) -> None:
    """Cancel a session's query (or end the session with --terminate), after asking.

    Refuses this connection, moviectl's own sessions and replication sessions.

    Example: `moviectl inspect kill 4242` or `moviectl inspect kill 4242 --terminate --yes`
    """
    from moviectl.core.inspect import kill

    settings = settings_of(ctx)
    session = kill.find(settings, pid)
    verb = "Terminate the session" if terminate else "Cancel the query"
    confirm(ctx, f"{verb} of {session.describe()}?", yes)
    result = kill.stop(settings, pid, terminate=terminate)
    out(ctx).emit(result, render_kill)
    raise typer.Exit(0 if result.stopped else 1)
