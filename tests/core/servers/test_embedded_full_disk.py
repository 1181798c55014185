"""`db up` (embedded) on a full disk: initdb runs out of space in its `.initdb-<pid>`
directory, which is removed; the command fails in one line (exit 8) naming initdb and the
cluster, and leaves no `pgdata` that would start half-made. Skips where no tmpfs can be
mounted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.core.upgrade_support import tmpfs
from tests.ports import free_port

pytestmark = pytest.mark.timeout(300)


def test_initdb_on_a_full_disk_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "data", 8) as data:
        cli = Cli(
            {
                "MOVIE_DB_BACKEND": "embedded",
                "MOVIE_DB_PORT": str(free_port()),
                "MOVIE_DATA_DIR": str(data),
                "MOVIE_DB_PASSWORD": "full-disk-pw",
            }
        )
        try:
            r = cli("db", "up")
            assert r.exit_code == 8, r.output
            assert "initdb failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
            assert "full-disk-pw" not in r.output + r.stderr
            assert not (data / "pgdata").exists()
            assert not list(data.glob(".initdb-*")), list(data.iterdir())
        finally:
            cli("db", "down")
