"""Migration scripts whose revisions form no history (a script that is its own
down_revision, a cycle) are the project's mistake: one line, exit 2, for every command that
reads them (issue 26 item 8), not an internal error."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import Cli, copy_migrations


@pytest.mark.parametrize("loop", ["self", "cycle"])
def test_a_broken_history_is_one_line_and_exit_2(movie_db_url, tmp_path, loop):
    scripts = copy_migrations(tmp_path)
    first, second = sorted((scripts / "versions").glob("0*.py"))[:2]
    down = re.compile(r"^down_revision(.*)= .*$", re.MULTILINE)
    if loop == "self":
        second.write_text(down.sub(r'down_revision\1= "0002"', second.read_text()))
    else:
        first.write_text(down.sub(r'down_revision\1= "0002"', first.read_text()))
    cli = Cli({"MOVIE_DATABASE_URL": movie_db_url, "MOVIE_MIGRATIONS_DIR": str(scripts)})
    for args in (
        ["migrate", "status"],
        ["migrate"],
        ["migrate", "history"],
        ["migrate", "new", "x", "--empty"],
        ["migrate", "lint"],
    ):
        r = cli("--json", *args)
        assert r.exit_code == 2, (args, r.output)
        doc = json.loads(r.stdout)
        assert doc["exit_code"] == 2 and "internal error" not in doc["message"], (args, doc)
        assert "Traceback" not in r.stderr
