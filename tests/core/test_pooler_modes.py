"""Behind a real PgBouncer in each pool_mode, and with a direct URL that leads elsewhere.

- A ``migrate`` killed (SIGKILL) while it holds the migration lock, behind a pooler in
  transaction and in session mode: the lock lives on the direct session, so it goes with
  the process; none is left in ``pg_locks`` and the next ``migrate`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY
from moviectl.infra.conninfo import DbTarget, parse_db_url
from tests.conftest import Cli, copy_migrations, start_moviectl, subprocess_env, wait_for
from tests.core.pgbouncer import start_pgbouncer

GATE = 4343
GATED_0003 = f'''"""0003: waits at the gate."""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_advisory_lock({GATE})")
    op.execute("CREATE TABLE passed_the_gate (x int)")


def downgrade() -> None:
    op.execute("DROP TABLE passed_the_gate")
'''


def _advisory(server: DbTarget, key: int) -> list[Any]:
    """Granted or waiting advisory locks ``key`` anywhere on the server."""
    with psycopg.connect(**server.libpq_params(10), autocommit=True) as c:
        return c.execute(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' AND objid = %s::oid",
            (key & 0xFFFFFFFF,),
        ).fetchall()


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_migrate_killed_behind_the_pooler_leaves_no_lock(
    mode: str, empty_db_url: str, moviectl_admin_target: DbTarget, tmp_path: Path
) -> None:
    scripts = copy_migrations(tmp_path)
    (scripts / "versions" / "0003_gated.py").write_text(GATED_0003)
    database = parse_db_url(empty_db_url).database
    with start_pgbouncer(moviectl_admin_target, tmp_path, mode) as bouncer:
        env = {
            "MOVIE_DATABASE_URL": bouncer.target(database).url(masked=False),
            "MOVIE_DATABASE_DIRECT_URL": empty_db_url,
            "MOVIE_MIGRATIONS_DIR": str(scripts),
        }
        with psycopg.connect(empty_db_url, autocommit=True) as gate:
            gate.execute("SELECT pg_advisory_lock(%s)", (GATE,))
            proc = start_moviectl(subprocess_env(**env), "--json", "migrate", cwd=None)
            try:  # holding the migration lock, waiting at the gate inside 0003
                waiting = lambda: [g for _, g in _advisory(moviectl_admin_target, GATE)]  # noqa: E731
                assert wait_for(lambda: False in waiting(), 60)
                held = [g for _, g in _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY)]
                assert held == [True]
            finally:
                proc.kill()
                proc.communicate(timeout=60)
            # the killed backend notices within a second (client_connection_check_interval)
            assert wait_for(lambda: not _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY), 30)
            gate.execute("SELECT pg_advisory_unlock(%s)", (GATE,))
        assert wait_for(lambda: not _advisory(moviectl_admin_target, GATE), 30)
        r = Cli(env)("migrate", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["to_revision"] == "0003"
    assert _advisory(moviectl_admin_target, MIGRATION_LOCK_KEY) == []
