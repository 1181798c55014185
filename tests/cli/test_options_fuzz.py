"""Every numeric or choice option of every command, fed the hostile value classes of issue 26
item 8: one JSON document under --json, a documented exit code, never a traceback or an
internal error. The database is unreachable (port 1) and nothing is confirmed, so a value
that is accepted ends in a quick, harmless failure."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer.main

from moviectl.cli.app import app
from moviectl.infra.errors import ExitCode
from tests.conftest import Cli

HOSTILE = [
    "nan",
    "inf",
    "-inf",
    "1e308",
    "-1",
    "0",
    "\uff15",
    "\u00b2",
    "9" * 5000,
    "0x10",
    "",
    "x" * 300,
]
DOCUMENTED = {int(c) for c in ExitCode}


# a value these accept would serve, open a shell or follow a log until stopped
NOT_HERE = {"--json", "--serve", "--bind"}
NOT_THESE = {("db", "shell"), ("db", "logs")}


def _options() -> list[tuple[list[str], str]]:
    """(command path, option) for every option that takes a value (walked by duck typing:
    Typer ships its own copy of click)."""
    found: list[tuple[list[str], str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])
        if tuple(path) in NOT_THESE:
            return
        for p in getattr(cmd, "params", []):
            if p.param_type_name == "option" and not p.is_flag and p.opts[0] not in NOT_HERE:
                found.append((path, p.opts[0]))

    walk(typer.main.get_command(app), [])
    return found


@pytest.mark.parametrize(
    ("path", "option"), _options(), ids=lambda x: "-".join(x) if isinstance(x, list) else x
)
def test_hostile_option_values_get_one_document_and_a_documented_code(tmp_path, path, option):
    cli = Cli(
        {
            "MOVIE_DB_PORT": "1",
            "MOVIE_DB_BACKEND": "external",
            "MOVIE_CONNECT_TIMEOUT": "1",
            "MOVIE_BACKUP_DIR": str(tmp_path),
            "MOVIE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    args = [str(tmp_path / "x.dump")] if path[-1:] in (["restore"], ["verify"]) else []
    for value in HOSTILE:
        r = cli("--json", *path, *args, option, value)
        assert r.exit_code in DOCUMENTED, (path, option, value, r.output)
        assert r.exit_code != int(ExitCode.INTERNAL), (path, option, value, r.output)
        assert "Traceback" not in r.output
        doc = json.loads(r.stdout)
        assert doc.get("ok") is not None or "exit_code" in doc or r.exit_code == 0, doc
