"""`moviectl init ci`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.cli.context import new_typer, out

if TYPE_CHECKING:
    from rich.console import Console

    from moviectl.core.init_ci import CiWorkflow

init_app = new_typer("Write files that set moviectl up in your repository.", no_args_is_help=True)


@init_app.command("ci")
def init_ci(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the workflow.")
    ] = Path(".github/workflows/moviectl.yml"),
    postgres: Annotated[
        int, typer.Option("--postgres", help="The PostgreSQL major of the service container.")
    ] = 16,
    python: Annotated[str, typer.Option("--python", help="The Python version to test on.")] = (
        "3.12"
    ),
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a GitHub Actions workflow: PostgreSQL as a service container, then `migrate`,
    `migrate check`, `migrate lint`, `migrate dump --check` (with a schema.sql) and pytest.

    Example: `moviectl init ci && git add .github/workflows/moviectl.yml`
    """
    from moviectl.core.init_ci import write_workflow

    result = write_workflow(output, major=postgres, python=python, force=force)
    out(ctx).emit(result, render_ci)


def render_ci(c: Console, r: CiWorkflow) -> None:
    verb = "replaced" if r.replaced else "wrote"
    c.print(f"[green]✓[/] {verb} {r.path} ({r.postgres} service container); commit it")
