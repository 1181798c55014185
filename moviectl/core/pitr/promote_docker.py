"""`pitr promote NAME` on the Docker backend: the swap journaled as the embedded one.

The segments in, the swap journaled (``pitr discard`` refused from then on) with the
restored archive's history files in it, the snapshot volume recorded before the db
container stops (``copying``), the volume copy (``docker.py``) recorded as done
(``volume``), and only then the history file (and tombstones) into the archive, so a
promote cut short before the journal and given up leaves none. A re-run finishes from the
journal: the copy again only if it was never recorded as done (a copy cut short runs in a
helper container that outlives moviectl), never over writes made to the container since.
The restore directory deleted by hand meanwhile: before the copy began, the promote is
given up (the container never left its rows); once it is done, the history file goes in
from the journal's copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from moviectl.core.pitr.promote_common import (
    PromoteResult,
    history_in,
    merge_archive,
    own_files,
    record_of,
    refuse_another,
    refuse_other_backend,
)
from moviectl.core.pitr.restore import RECORD, server_of
from moviectl.core.servers import swap_journal
from moviectl.core.servers.docker import DockerBackend
from moviectl.infra.errors import Refused
from moviectl.infra.settings import Settings


def promote_docker(settings: Settings, name: str, path: Path, store: Any) -> PromoteResult:
    from moviectl.core.pitr import docker

    data_dir = Path(settings.data_dir)
    j = swap_journal.read(data_dir)
    refuse_another(j, name)
    refuse_other_backend(j, swap_journal.path_of(data_dir), docker=True)
    if j is None:
        docker.preflight(settings)  # nothing stopped or merged when the copy cannot run
        record = record_of(path, name)
        restored = server_of(settings, path, int(record["port"]))
        restored.stop("fast")  # its last segments reach its own archive first
        moved = merge_archive(path / "archive", store.wal_dir(), history=False)
        j = {
            "name": name,
            "pid": os.getpid(),
            "aside": None,
            "timeline": int(record["timeline"]),
            "wal_moved": moved,
            "history": _histories(path / "archive"),
        }
        swap_journal.write(data_dir, j)
    else:
        _same_volume(settings, j)
    mine = _journaled(path, j)
    try:
        done = docker.copy_done(settings) if "copying" in j and "volume" not in j else None
        if done is not None and done == j["copying"]:  # finished after the promote was cut
            j["volume"], j["aside"] = DockerBackend(settings).svc.volume_name, done
            swap_journal.write(data_dir, j)  # nothing copied over later writes
        if "volume" not in j:
            if not mine:
                _gone(data_dir, j, path)

            def copying(before: str) -> None:  # the container stops after this
                j["copying"] = before
                swap_journal.write(data_dir, j)

            j["volume"], j["aside"] = docker.promote(settings, path, store, copying)
            swap_journal.write(data_dir, j)  # swapped: a re-run copies nothing over it
        docker.drop_helper(settings)
        docker.serving(settings)  # stopped by a killed run's copy: started, as `db up`
        _history_from(j, path if mine else None, store, data_dir)
        doomed = path.with_name(f".promoted-{path.name}-{os.getpid()}")
        if mine:  # a restore made since under the same name is not this promote's
            os.rename(path, doomed)
        swap_journal.remove(data_dir)
    except BaseException as exc:
        if swap_journal.path_of(data_dir).exists():
            exc.add_note(f"promote cut short; finish it: moviectl pitr promote {name} --yes")
        raise
    for left in [doomed, *path.parent.glob(f".promoted-{path.name}-*")]:  # a killed run's
        shutil.rmtree(left, ignore_errors=True)
    volume, before = f"volume {j['volume']}", f"volume {j['aside']}"
    return PromoteResult(name, volume, before, j["timeline"], j["wal_moved"])


def _histories(own: Path) -> dict[str, str]:
    """The restored archive's history files (a few lines each), kept in the journal: the
    restore directory deleted by hand once the copy is done still gets them in."""
    files = own_files(own) if own.is_dir() else []
    return {f.name: f.read_text() for f in files if f.name.endswith(".history")}


def _same_volume(settings: Settings, j: dict[str, Any]) -> None:
    """A journal whose copy names another volume than the db service's was not written by
    this promote: finishing it would claim a swap that never happened."""
    volume = DockerBackend(settings).svc.volume_name
    if "volume" in j and j["volume"] != volume:
        raise Refused(
            f"{swap_journal.path_of(Path(settings.data_dir))} says the copy went into volume "
            f"{j['volume']!r}, not the db service's {volume!r}; nothing was done",
            hint="was MOVIE_COMPOSE_PROJECT or the compose file changed? put it back, "
            "then re-run the promote",
        )


def _journaled(path: Path, j: dict[str, Any]) -> bool:
    """``path`` still holds the restore this promote journaled (not deleted by hand, nor a
    later restore under the same name: that one has another timeline, past the leftovers
    of the journaled one)."""
    try:
        record = json.loads((path / RECORD).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and record.get("timeline") == j["timeline"]
        and (path / "pgdata").is_dir()
    )


def _gone(data_dir: Path, j: dict[str, Any], path: Path) -> None:
    """The journaled restore is gone (or replaced) before its copy was recorded as done."""
    name = j["name"]
    if "copying" not in j:  # no copy ever began: the container never left its rows
        swap_journal.remove(data_dir)
        raise Refused(
            f"the restored cluster {name} this promote journaled is gone from {path}; "
            f"nothing was swapped, the promote of "
            f"{name} is given up (the container keeps its rows)",
            hint="restore again (`moviectl restore --physical`), then promote that",
        )
    raise Refused(
        f"the restored cluster {name} this promote journaled is gone from {path}, and its "
        "copy into the volume had begun "
        f"(the old contents are in volume {j['copying']}); nothing was done",
        hint="see which rows the container serves (`moviectl db up`): if its own, move "
        f"{swap_journal.path_of(data_dir)} away; else restore volume {j['copying']}",
    )


def _history_from(j: dict[str, Any], path: Path | None, store: Any, data_dir: Path) -> None:
    """The history file(s) into the archive: from the restore's own archive, or, when it
    is gone (``path`` None), from the journal's copy (``_histories``)."""
    if path is not None or not j.get("history"):
        if path is not None:
            history_in(path / "archive", store)
        return
    stage = data_dir / f".promote-history-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        for file, text in j["history"].items():
            (stage / file).write_text(text)
        merge_archive(stage, store.wal_dir(), history=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
