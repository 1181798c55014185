"""The migration lock between real ``moviectl migrate`` processes.

A migration that holds the lock is held up inside its 0003 by a gate (an advisory lock
this test holds), so the other runs meet it at a known moment, not by timing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg

from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY
from tests.conftest import copy_migrations, start_moviectl, subprocess_env, wait_for

GATE = 4242
GATED_0003 = f'''"""0003: waits at the gate."""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_advisory_lock({GATE})")
    op.execute("SELECT pg_advisory_unlock({GATE})")
    op.execute("CREATE TABLE passed_the_gate (x int)")


def downgrade() -> None:
    op.execute("DROP TABLE passed_the_gate")
'''


def _migrate(url: str, scripts: Path, lock_timeout: str) -> Any:
    env = subprocess_env(
        MOVIE_DATABASE_URL=url,
        MOVIE_MIGRATIONS_DIR=str(scripts),
        MOVIE_MIGRATE_LOCK_TIMEOUT=lock_timeout,
        MOVIE_MIGRATE_STATEMENT_LOCK_TIMEOUT="0",  # the gate may take as long as the test
    )
    return start_moviectl(env, "--json", "migrate", cwd=None)


def _advisory(c: psycopg.Connection[Any], key: int, granted: bool) -> list[int]:
    """Pids holding (``granted``) or queued for (not) advisory lock ``key`` here."""
    rows = c.execute(
        """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = %s
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND objid = %s::bigint::oid AND objsubid = 1""",
        (granted, key & 0xFFFFFFFF),
    ).fetchall()
    return [r[0] for r in rows]


def test_a_second_migrate_fails_naming_the_first_and_a_third_waits_for_it(
    movie_db_url: str, tmp_path: Path
) -> None:
    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_gated.py").write_text(GATED_0003)
    procs: list[Any] = []
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("SELECT pg_advisory_lock(%s)", (GATE,))
        try:
            first = _migrate(movie_db_url, scripts, "60")
            procs.append(first)
            # the first holds the migration lock and waits at the gate
            assert wait_for(lambda: _advisory(c, GATE, granted=False), 60)
            holder = _advisory(c, MIGRATION_LOCK_KEY, granted=True)
            assert len(holder) == 1

            started = time.monotonic()
            second = _migrate(movie_db_url, scripts, "1")
            procs.append(second)
            out, err = second.communicate(timeout=60)
            waited = time.monotonic() - started
            assert second.returncode == 7, (out, err)
            said = out + err
            assert f"pid {holder[0]}" in said and "moviectl migrate" in said, said
            assert waited < 30  # it gave up after its 1 s (plus start-up), not the first's 60

            third = _migrate(movie_db_url, scripts, "60")
            procs.append(third)
            # queued on the server for the migration lock (no polling: an ungranted lock)
            assert wait_for(lambda: _advisory(c, MIGRATION_LOCK_KEY, granted=False), 60)
        except BaseException:
            for p in procs:  # a failed assertion leaves no migrate running
                p.kill()
                p.communicate()
            raise
        finally:
            c.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        docs = []
        for p in (first, third):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, (out, err)
            docs.append(json.loads(out))
    assert [s["revision"] for s in docs[0]["steps"]] == ["0003"]
    assert docs[1]["steps"] == [] and docs[1]["from_revision"] == "0003"  # read in the lock


def test_a_timeout_of_0_fails_at_once_when_the_lock_is_held(empty_db_url: str) -> None:
    with psycopg.connect(empty_db_url, autocommit=True, application_name="nightly-job") as c:
        c.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        pid = c.info.backend_pid
        env = subprocess_env(MOVIE_DATABASE_URL=empty_db_url, MOVIE_MIGRATE_LOCK_TIMEOUT="0")
        p = start_moviectl(env, "migrate", cwd=None)
        out, err = p.communicate(timeout=60)  # lock_timeout = 0 would have waited forever
    assert p.returncode == 7, (out, err)
    assert f"pid {pid} (nightly-job" in err
