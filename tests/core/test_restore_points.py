"""Restore points (core/restore_points.py) on a real embedded PostgreSQL 18 with archiving
on: `migrate` names one before it runs, recorded in marks.json."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.core.pitr_support import started

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    yield from started(tmp_path_factory.mktemp("restore-points"))


def test_migrate_marks_a_restore_point_while_archiving(pitr: Cli) -> None:
    """`migrate` names a restore point first (core/restore_points.py), findable by name."""
    marks = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "marks.json"
    r = pitr("migrate")  # to head first, whatever `db up` left
    assert r.exit_code == 0, r.output
    r = pitr("migrate", "down", "--steps", "1", "--yes")
    assert r.exit_code == 0, r.output
    names = [m["name"] for m in json.loads(marks.read_text())]
    assert any(n.startswith("before-migrate-") for n in names), names
    r = pitr("migrate")
    assert r.exit_code == 0, r.output
