"""`moviectl seed`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from moviectl.cli.context import YesOpt, confirm, out, settings_of
from moviectl.cli.protection import OverrideOpt
from moviectl.cli.render import render_seed


def seed_cmd(
    ctx: typer.Context,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample", min=1, max=1_000_000_000, help="Insert N realistic sample movies."
        ),
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option("--from", help="Load a CSV or JSON file (title,year,genre,rating)."),
    ] = None,
    random_seed: Annotated[
        int, typer.Option("--random-seed", min=0, max=2**63 - 1, help="Same seed, same rows.")
    ] = 1895,
    again: Annotated[
        bool, typer.Option("--again", help="Insert even if this seed set was already loaded.")
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Empty the movie tables first (asks first).")
    ] = False,
    yes: YesOpt = False,
    override: OverrideOpt = False,
) -> None:
    """Insert sample movies or a file's rows; recorded in the seed ledger, never twice.

    Large loads stream through COPY in one transaction with a progress bar; a bad
    file row is reported with its line number and nothing is inserted.

    Example: `moviectl seed --sample 3` or `moviectl seed --from movies.csv --reset --yes`
    """
    from moviectl.cli.output import RowProgress
    from moviectl.core.seed import load as core
    from moviectl.infra.errors import UsageError

    if (sample is None) == (from_file is None):
        raise UsageError("give --sample N or --from FILE (one of them)")
    settings = settings_of(ctx)
    o = out(ctx)
    if reset:
        from moviectl.cli.protection import touching
        from moviectl.infra.protect import guard

        guard(settings, "empty its movie tables (seed --reset)", override=override)
        confirm(ctx, f"Empty the movies and seed_runs tables of {touching(settings)}?", yes)
        core.reset(settings)
    with RowProgress(o, "seeding") as progress:
        result = core.seed(
            settings,
            sample=sample,
            path=from_file,
            random_seed=random_seed,
            again=again,
            progress=progress if o.interactive else None,
        )
    o.emit(result, render_seed)
