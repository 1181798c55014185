"""Which PostgreSQL server binaries (old and new major) are here, or what to install."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.infra.errors import ToolMissing
from moviectl.infra.pgtools import binary_major, wheel_bin_dir

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

# every server tool pg_upgrade and the checks need from each major
NEEDED = ("postgres", "initdb", "pg_ctl", "pg_controldata", "pg_upgrade", "pg_config")


def _candidates(settings: Settings, major: int) -> list[Path]:
    found = [settings.pg_bin_dir, wheel_bin_dir(), Path(f"/usr/lib/postgresql/{major}/bin")]
    return [d for d in found if d is not None]


def server_bin_dir(settings: Settings, major: int, role: str) -> Path:
    """A bin directory with PostgreSQL ``major``'s server programs (``role``: old | new)."""
    for d in _candidates(settings, major):
        names = NEEDED if role == "new" else NEEDED[:4]
        if all((d / name).exists() for name in names):
            try:
                if binary_major(d) == major:
                    return d
            except (OSError, ValueError):
                continue
    setting = "MOVIE_PG_BIN_DIR at them" if role == "old" else "them in /usr/lib/postgresql"
    raise ToolMissing(
        f"no PostgreSQL {major} server binaries here ({role} cluster): install postgresql-"
        f"{major} (Debian/PGDG: apt-get install postgresql-{major}) and point {setting}",
        hint=f"looked in {', '.join(str(d) for d in _candidates(settings, major))}",
    )


def share_dir(bin_dir: Path) -> Path:
    """The ``share`` directory of these binaries (extensions' control files live below)."""
    import subprocess

    res = subprocess.run(
        [str(bin_dir / "pg_config"), "--sharedir"], capture_output=True, text=True, timeout=30
    )
    if res.returncode == 0 and Path(res.stdout.strip()).is_dir():
        return Path(res.stdout.strip())
    for d in (bin_dir.parent / "share" / "postgresql", bin_dir.parent / "share"):
        if (d / "extension").is_dir():
            return d
    return bin_dir.parent / "share"
