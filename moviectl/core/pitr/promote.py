"""`moviectl pitr promote NAME`: swap a restored cluster in for the managed server.

Nothing is deleted: the old ``pgdata`` is renamed to ``pgdata.before-<time>`` (the safety
snapshot: move it back to undo), the restored one takes its place, and the WAL the
restored cluster archived into its own archive joins the real one (the new timeline's
history file first), so the archive covers the new timeline from its first segment.
Docker: the data volume's old contents are copied into a new volume first (``docker.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from moviectl.core.pitr.restore import RECORD, restores_dir, server_of
from moviectl.core.pitr.server import PITR_CONF, backend_name, give_to_server
from moviectl.core.pitr.store import fsync_dir, store_of
from moviectl.infra.errors import Refused, UsageError
from moviectl.infra.settings import Settings


@dataclass
class PromoteResult:
    name: str
    pgdata: str
    snapshot: str | None  # the old cluster, kept whole
    timeline: int
    wal_moved: int
    next_step: str = "take a base backup of the new timeline: moviectl backup --physical"


def promote(settings: Settings, name: str) -> PromoteResult:
    backend = backend_name(settings)
    if backend not in ("embedded", "docker"):
        raise UsageError(
            "`pitr promote` swaps clusters of the embedded and Docker backends only",
            hint="for another server, point the app at the restored cluster's port",
        )
    path = restores_dir(settings) / name
    try:
        record = json.loads((path / RECORD).read_text())
    except OSError:
        raise UsageError(
            f"no restored cluster named {name!r} in {path.parent}",
            hint="list them with `moviectl pitr status`",
        ) from None
    restored = server_of(settings, path, int(record["port"]))
    store = store_of(settings)
    if backend == "docker":
        from moviectl.core.pitr import docker

        restored.stop("fast")  # its last segments reach its own archive first
        moved = _merge_archive(path / "archive", store.wal_dir())
        volume, before = docker.promote(settings, path, store)  # type: ignore[arg-type]
        return PromoteResult(
            name, f"volume {volume}", f"volume {before}", int(record["timeline"]), moved
        )
    from moviectl.core.servers.embedded import embedded_server

    main = embedded_server(settings)
    with main.lock():
        restored.stop("fast")  # its last segments reach its own archive first
        moved = _merge_archive(path / "archive", store.wal_dir())
        main.stop("fast")
        snapshot = None
        if main.pgdata.exists():
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = main.pgdata.with_name(f"pgdata.before-{stamp}")
            os.rename(main.pgdata, aside)
            snapshot = str(aside)
        os.rename(path / "pgdata", main.pgdata)
        fsync_dir(main.pgdata.parent)
        if snapshot and (Path(snapshot) / PITR_CONF).exists():  # archiving, as before
            shutil.copy2(Path(snapshot) / PITR_CONF, main.pgdata / PITR_CONF)
            give_to_server(main.pgdata / PITR_CONF)
        main.start()
    shutil.rmtree(path, ignore_errors=True)
    return PromoteResult(name, str(main.pgdata), snapshot, int(record["timeline"]), moved)


def _merge_archive(own: Path, archive: Path) -> int:
    """Copy the restored cluster's archived WAL into the real archive (never overwriting
    different bytes: refused before anything is swapped)."""
    files = sorted(own.iterdir(), key=lambda p: (not p.name.endswith(".history"), p.name))
    files = [f for f in files if not f.name.startswith(".")]
    for f in files:
        dest = archive / f.name
        if dest.exists() and dest.read_bytes() != f.read_bytes():
            raise Refused(
                f"{dest} exists with different contents; nothing was swapped",
                hint="another restore was promoted on this timeline: take a base backup "
                "and restore again",
            )
    moved = 0
    for f in files:
        dest = archive / f.name
        if dest.exists():
            continue
        tmp = archive / f".{f.name}.{os.getpid()}.tmp"
        shutil.copyfile(f, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.link(tmp, dest)
        tmp.unlink()
        give_to_server(dest)
        moved += 1
    if moved:
        fsync_dir(archive)
    return moved
