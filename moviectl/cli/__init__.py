"""moviectl's command line. ``main()`` is the console script."""

from __future__ import annotations

from moviectl.cli import commands_config, commands_migrate  # noqa: F401  (register commands)
from moviectl.cli.app import app


def main() -> None:
    app(prog_name="moviectl")


__all__ = ["app", "main"]
