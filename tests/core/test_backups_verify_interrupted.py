"""`backup verify` whose server goes away mid-drill: exit 3, as restore (same load_into)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.conftest import Cli, backup_json
from tests.core.test_backups_restore_interrupted import cut_the_load_midway


@pytest.fixture
def seeded(seeded_db_url):
    """The CLI on a database of 200,000 movies (a drill long enough to interrupt)."""
    return Cli({"MOVIE_DATABASE_URL": seeded_db_url})


def _drills(c: psycopg.Connection) -> list[str]:
    rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE 'movies_verify_%'")
    return [r[0] for r in rows.fetchall()]


def test_the_server_going_away_mid_verify_is_exit_3(seeded, tmp_path, seeded_db_url):
    """pg_terminate_backend of the drill's load session ends it with 57P01, as a fast
    shutdown does; the next verify drops the marked database the killed drill left."""
    path = Path(backup_json(seeded, tmp_path)["path"])
    code, text = cut_the_load_midway(
        ["backup", "verify", str(path)], seeded.env, seeded_db_url, "LIKE 'movies_verify_%'"
    )
    assert code == 3, text
    assert "went away" in text and "Traceback" not in text
    try:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            assert len(_drills(c)) == 1  # marked `loading` by a pid now gone
        r = seeded("backup", "verify", str(path))
        assert r.exit_code == 0, r.output
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            assert _drills(c) == []
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            for name in _drills(c):
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
