"""`migrate status` reads the scripts without Alembic (``chain.py``) and the row with
psycopg: it must answer exactly as Alembic does, whatever shape the scripts have, and
fall back to Alembic itself for every shape it does not read."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from moviectl.core.migrations import status as st
from moviectl.core.migrations.chain import linear_chain
from moviectl.infra.settings import load_settings
from tests.conftest import ROOT, copy_migrations, subprocess_env

THIRD = '''"""third: a column

Revision ID: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = {down}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("movies", sa.Column("note", sa.Text()))


def downgrade() -> None:
    op.drop_column("movies", "note")
'''


def _down(path: Path, value: str) -> None:
    text = re.sub(
        r"^down_revision(.*)= .*$",
        rf"down_revision\1= {value}",
        path.read_text(),
        count=1,
        flags=re.M,
    )
    path.write_text(text)


def _shape(scripts: Path, shape: str) -> None:
    versions = scripts / "versions"
    first, second = sorted(versions.glob("0*.py"))[:2]
    if shape == "third":
        (versions / "0003_third.py").write_text(THIRD.format(down='"0002"'))
    elif shape == "branch":  # two heads
        (versions / "0003_third.py").write_text(THIRD.format(down='"0001"'))
    elif shape == "merge":
        (versions / "0003_third.py").write_text(THIRD.format(down='"0002"'))
        (versions / "0004_merge.py").write_text(
            THIRD.format(down='("0003", "0002")').replace('"0003"', '"0004"', 1)
        )
    elif shape == "self":
        _down(second, '"0002"')
    elif shape == "cycle":
        _down(first, '"0002"')
    elif shape == "missing_parent":
        _down(first, '"0000"')
    elif shape == "computed":
        _down(second, '"00" + "01"')
    elif shape == "conditional":
        second.write_text(second.read_text() + '\nif True:\n    down_revision = "0001"\n')
    elif shape == "depends_on":
        (versions / "0003_third.py").write_text(
            THIRD.format(down='"0002"').replace("depends_on = None", 'depends_on = "0001"')
        )
    elif shape == "duplicate":
        (versions / "0003_third.py").write_text(
            THIRD.format(down='"0001"').replace('"0003"', '"0002"')
        )
    elif shape == "syntax_error":
        (versions / "0003_third.py").write_text(THIRD.format(down='"0002"') + "\ndef (:\n")
    elif shape == "ignored_files":  # what Alembic does not load: neither must we
        (versions / "__init__.py").write_text("")
        (versions / "notes.txt").write_text("revision = 'x'")
    elif shape == "docstrings":
        (versions / "0003_third.py").write_text(
            THIRD.format(down='"0002"').replace('"""third: a column', '"""\n\n  third\tcol  \nmore')
        )
    elif shape == "empty":
        for p in versions.glob("*.py"):
            p.unlink()


SHAPES = [
    "asis",
    "third",
    "branch",
    "merge",
    "self",
    "cycle",
    "missing_parent",
    "computed",
    "conditional",
    "depends_on",
    "duplicate",
    "syntax_error",
    "ignored_files",
    "docstrings",
    "empty",
]
FAST = {"asis", "third", "ignored_files", "docstrings", "empty"}


def _outcome(fn, *args):  # type: ignore[no-untyped-def]
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the same error, type and words, from both paths
        return ("error", type(exc).__name__, str(exc).replace("\\", "/"))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("row", ["0002", "0001", "none", "no_table", "000"])
def test_status_answers_as_alembic_does(movie_db_url, tmp_path, monkeypatch, shape, row):
    scripts = copy_migrations(tmp_path)
    _shape(scripts, shape)
    monkeypatch.setenv("MOVIE_MIGRATIONS_DIR", str(scripts))
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        if row == "no_table":
            c.execute("DROP TABLE alembic_version")
        elif row == "none":
            c.execute("DELETE FROM alembic_version")
        else:
            c.execute("UPDATE alembic_version SET version_num = %s", (row,))
    settings = load_settings(use_dotenv=False, database_url=movie_db_url)
    assert (linear_chain(scripts / "versions") is not None) == (shape in FAST)
    target = settings.target()
    fast = _outcome(st.status, settings)
    slow = _outcome(st._status_by_alembic, settings, target, None)
    assert fast == slow


def test_two_rows_in_alembic_version_is_one_clear_line(cli):
    with psycopg.connect(cli.env["MOVIE_DATABASE_URL"], autocommit=True) as c:
        c.execute("INSERT INTO alembic_version VALUES ('0001')")
    r = cli("--json", "migrate", "status")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert "2 revisions in alembic_version" in doc["message"] and "internal" not in doc["message"]


def test_status_imports_neither_alembic_nor_sqlalchemy(movie_db_url):
    """What makes it fast: the whole process, through the real entry point."""
    code = (
        "import sys, runpy; sys.argv = ['moviectl', 'migrate', 'status', '--json'];\n"
        "try:\n    runpy.run_module('moviectl', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('alembic', 'sqlalchemy', 'sqlmodel', 'mako'))\n"
        "print('HEAVY', heavy, code, file=sys.stderr)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(MOVIE_DATABASE_URL=movie_db_url),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert json.loads(res.stdout)["current"] == "0002"
    assert "HEAVY [] 0" in res.stderr, res.stderr
