"""moviectl's command line. ``main()`` is the console script (behind ``moviectl.fastpath``)."""

from __future__ import annotations

import importlib

from moviectl.cli.app import app

# Each module registers its commands; this order is the order `moviectl --help` lists them.
for _module in ("up", "migrate", "seed", "health", "backup", "testdb", "config"):
    importlib.import_module(f"moviectl.cli.commands_{_module}")


def main() -> None:
    app(prog_name="moviectl")


__all__ = ["app", "main"]
