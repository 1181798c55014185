"""`db up` (embedded) on a full disk: initdb runs out of space in its `.initdb-<pid>`
directory, which is removed; the command fails in one line (exit 8) naming initdb and the
cluster, and leaves no `pgdata` that would start half-made. Skips where no tmpfs can be
mounted."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Cli
from tests.ports import free_port

pytestmark = pytest.mark.timeout(300)


def test_initdb_on_a_full_disk_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(data)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr!r}")
    try:
        cli = Cli(
            {
                "MOVIE_DB_BACKEND": "embedded",
                "MOVIE_DB_PORT": str(free_port()),
                "MOVIE_DATA_DIR": str(data),
                "MOVIE_DB_PASSWORD": "full-disk-pw",
            }
        )
        r = cli("db", "up")
        assert r.exit_code == 8, r.output
        assert "initdb failed" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert "full-disk-pw" not in r.output + r.stderr
        assert not (data / "pgdata").exists()
        assert not list(data.glob(".initdb-*")), list(data.iterdir())
    finally:
        Cli({"MOVIE_DB_BACKEND": "embedded", "MOVIE_DATA_DIR": str(data)})("db", "down")
        subprocess.run(["umount", "-l", str(data)], check=False, timeout=60)
