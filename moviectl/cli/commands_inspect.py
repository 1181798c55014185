"""`moviectl inspect …`: one command per question (``core/inspect/registry.py``), made here
from one template each so that every one has `--limit`, `--json` and its own help."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from moviectl.cli.context import new_typer, out, settings_of
from moviectl.cli.render_inspect import render_inspect

inspect_app = new_typer(
    "What is slow, big, blocked or bloated: the pg-extras set, answered by moviectl.\n\n"
    "Example: `moviectl inspect blocking` or `moviectl inspect diagnose --json`",
    no_args_is_help=True,
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
