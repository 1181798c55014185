"""``MOVIE_DATA_DIR/promoting.json``: a `pitr promote` swapping the embedded cluster.

Written (fsynced) before the old ``pgdata`` is stopped or moved, removed once the promoted
cluster runs. While it exists ``pgdata`` may be missing for a moment (between two renames):
``db up`` then refuses instead of initdb-ing an empty cluster over the gap, and names the
command that finishes the swap (``pitr promote NAME``, which reads this file and resumes).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moviectl.infra.errors import Refused
from moviectl.infra.files import fsync_dir, write_json_atomic

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
    write_json_atomic(path_of(data_dir), data)


def remove(data_dir: Path) -> None:
    path_of(data_dir).unlink(missing_ok=True)
    fsync_dir(data_dir)


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
