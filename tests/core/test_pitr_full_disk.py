"""The WAL archive on a full disk (a small tmpfs, filled): the archive script fails as for
an unreachable repository, so PostgreSQL keeps each segment and retries; `pitr status`
warns, no temp file is left in the archive, and once space is freed archiving catches up
and a `--latest` restore holds every row. Skips where no tmpfs can be mounted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, wait_for
from tests.core.pitr_support import conn, started, status
from tests.core.upgrade_support import fill, tmpfs

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def on_small_disk(tmp_path: Path) -> Iterator[Cli]:
    with tmpfs(tmp_path / "backups", 400):
        yield from started(tmp_path)


def test_a_full_archive_disk_fails_archiving_and_loses_nothing(on_small_disk: Cli) -> None:
    cli = on_small_disk
    assert cli("backup", "--physical").exit_code == 0
    wal = Path(cli.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"
    ballast = fill(wal, 1 << 20)  # 1 MB free: less than one WAL segment
    with conn(cli) as c:
        c.execute("CREATE TABLE IF NOT EXISTS full_disk (g int, m text)")
        c.execute("INSERT INTO full_disk SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
        c.execute("SELECT pg_switch_wal()")
    assert wait_for(lambda: status(cli)["archiver"]["failing"], 60)
    r = cli("pitr", "status", "--json")
    assert r.exit_code == 1
    assert any("archiving is failing" in w for w in json.loads(r.stdout)["warnings"])
    assert not [p.name for p in wal.iterdir() if p.name.startswith(".")]  # no temp file left
    ballast.unlink()
    with conn(cli) as c:
        c.execute("SELECT pg_switch_wal()")
    assert wait_for(lambda: not status(cli)["archiver"]["failing"], 120)
    assert status(cli)["archive"]["gaps"] == []
    r = cli("restore", "--physical", "--latest", "--into", "after-full", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["row_counts"]["public.full_disk"] == 100000
    assert cli("pitr", "discard", "after-full", "--yes").exit_code == 0
