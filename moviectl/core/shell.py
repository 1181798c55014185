"""`db shell`: pgcli (or psql) on the app database; the password goes through the environment."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from moviectl.infra.errors import ToolMissing
from moviectl.infra.pgtools import child_env, find_tool
from moviectl.infra.settings import Settings


def find_client(settings: Settings, psql: bool, *, tls: bool = False) -> str:
    """pgcli (in moviectl's environment), or psql; with ``tls`` only a TLS-capable psql."""
    if psql:
        return find_tool("psql", settings, tls=tls).path
    for c in (Path(sys.executable).parent / "pgcli", shutil.which("pgcli")):
        if c is not None and Path(c).exists():
            return str(c)
    raise ToolMissing("pgcli is not installed", hint="reinstall moviectl (uv sync)")


def shell_command(
    settings: Settings, psql: bool = False, command: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """argv and environment for the interactive client: the whole connection (TLS settings
    included) as one conninfo argument, the password only in the environment; ``command``:
    one statement to run and exit (``-c``, which pgcli and psql both take)."""
    t = settings.session_target()  # a shell is a session (SET, BEGIN, temp tables): direct
    conninfo = t.child_conninfo()
    client = find_client(settings, psql, tls=t.wants_tls)
    # one token that starts with a keyword: a database named `--version` stays a name
    argv = [client, f"--dbname={conninfo}"] if psql else [client, conninfo]
    if command is not None:
        argv += [f"--command={command}"]  # one token: a statement starting with - stays SQL
    return argv, child_env(t)
