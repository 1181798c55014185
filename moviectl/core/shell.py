"""`db shell`: pgcli (or psql) on the app database; the password goes through the environment."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from moviectl.infra.errors import ToolMissing
from moviectl.infra.settings import Settings


def find_client(settings: Settings, psql: bool) -> str:
    name = "psql" if psql else "pgcli"
    candidates: list[Path | None] = [Path(sys.executable).parent / name]
    if psql:
        from moviectl.infra.pgtools import wheel_bin_dir

        wheel = wheel_bin_dir()
        candidates = [
            settings.pg_bin_dir / name if settings.pg_bin_dir else None,
            wheel / name if wheel else None,
        ]
    for c in candidates:
        if c is not None and c.exists():
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing(
        f"{name} is not installed",
        hint="reinstall moviectl (uv sync)"
        if not psql
        else "install PostgreSQL's client (e.g. apt-get install postgresql-client)",
    )


def shell_command(settings: Settings, psql: bool = False) -> tuple[list[str], dict[str, str]]:
    """argv and environment for the interactive client. argv never holds the password."""
    t = settings.target()
    argv = [find_client(settings, psql), "-h", t.host, "-p", str(t.port), "-U", t.user]
    argv.append(f"--dbname={t.database}")  # one token: a name like `--version` stays a name
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(t.child_env())
    return argv, env
