"""``MOVIE_DATA_DIR/promoting.json``: a `pitr promote` swapping the embedded cluster.

Written (fsynced) before the old ``pgdata`` is stopped or moved, removed once the promoted
cluster runs. While it exists ``pgdata`` may be missing for a moment (between two renames):
``db up`` then refuses instead of initdb-ing an empty cluster over the gap, and names the
command that finishes the swap (``pitr promote NAME``, which reads this file and resumes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moviectl.infra.errors import Refused

JOURNAL = "promoting.json"


def path_of(data_dir: Path) -> Path:
    return data_dir / JOURNAL


def read(data_dir: Path) -> dict[str, Any] | None:
    try:
        return dict(json.loads(path_of(data_dir).read_text()))
    except FileNotFoundError:
        return None
    except ValueError:  # cut short while written: the rename makes that impossible
        return None


def write(data_dir: Path, data: dict[str, Any]) -> None:
    path = path_of(data_dir)
    tmp = path.with_name(f".{JOURNAL}.{os.getpid()}.partial")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    sync_dir(data_dir)


def remove(data_dir: Path) -> None:
    path_of(data_dir).unlink(missing_ok=True)
    sync_dir(data_dir)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def refuse_if_interrupted(data_dir: Path) -> None:
    """Called under the cluster's start/stop lock, which a running promote holds: a
    journal seen here was left by a promote that was killed."""
    j = read(data_dir)
    if j is None:
        return
    raise Refused(
        f"a `pitr promote {j['name']}` was interrupted (pid {j.get('pid')}); "
        f"{data_dir / 'pgdata'} may be the old cluster, the restored one, or missing",
        hint=f"finish it: moviectl pitr promote {j['name']} --yes "
        f"(the old cluster is kept in {j.get('aside') or 'pgdata'})",
    )
