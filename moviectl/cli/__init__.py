"""moviectl's command line. ``main()`` is the console script."""

from __future__ import annotations

from moviectl.cli import (  # noqa: F401  (each module registers its commands)
    commands_backup,
    commands_config,
    commands_db,
    commands_health,
    commands_migrate,
    commands_seed,
    commands_testdb,
    commands_up,
)
from moviectl.cli.app import app


def main() -> None:
    app(prog_name="moviectl")


__all__ = ["app", "main"]
