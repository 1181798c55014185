"""What the embedded and the Docker `pitr promote` share (``promote.py``,
``promote_docker.py``): the result, the journaled restore's record, and the merge of the
restored cluster's own archive into the real one (segments first; the history file and
tombstones only once the swap is journaled)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviectl.core.pitr.restore import RECORD
from moviectl.core.pitr.server import give_to_server
from moviectl.core.pitr.store import fsync_dir
from moviectl.core.pitr.timelines import gaps, history_name, timeline_of, tombstone
from moviectl.infra.errors import Refused, UsageError


@dataclass
class PromoteResult:
    name: str
    pgdata: str
    snapshot: str | None  # the old cluster, kept whole
    timeline: int
    wal_moved: int
    next_step: str = "take a base backup of the new timeline: moviectl backup --physical"


def refuse_another(j: dict[str, Any] | None, name: str) -> None:
    if j is not None and j["name"] != name:
        raise Refused(
            f"an interrupted promote of {j['name']} must be finished first",
            hint=f"moviectl pitr promote {j['name']} --yes",
        )


def refuse_other_backend(j: dict[str, Any] | None, journal: Path, *, docker: bool) -> None:
    """A journal the other backend's promote wrote (the embedded one names the ``restored``
    directory it renames, the Docker one never does): MOVIE_DB_BACKEND changed since.
    Finishing it here would rename or copy what that promote never meant to."""
    if j is None or ("restored" in j) != docker:
        return
    was, now = ("embedded", "Docker") if docker else ("Docker", "embedded")
    raise Refused(
        f"{journal} was written by a promote on the {was} backend, this is the {now} one; "
        "nothing was done",
        hint=f"set MOVIE_DB_BACKEND back to finish it: moviectl pitr promote {j['name']} --yes",
    )


def record_of(path: Path, name: str) -> dict[str, Any]:
    try:
        return dict(json.loads((path / RECORD).read_text()))
    except OSError:
        raise UsageError(
            f"no restored cluster named {name!r} in {path.parent}",
            hint="list them with `moviectl pitr status`",
        ) from None


def _is_history(f: Path) -> bool:
    return f.name.endswith(".history")


def history_in(own: Path, store: Any) -> None:
    """The new timeline's history file into the archive, then the tombstones below it.
    Run only once the swap is journaled (and by every re-run: the same bytes are skipped),
    so a promote killed before the journal and given up (``pitr discard``) leaves no
    history file to lead a later ``--latest`` restore onto a timeline never swapped in.
    The restore's directory is gone only once the promoted cluster runs: done before."""
    if not own.is_dir():
        return
    if hasattr(store, "wal_repo"):
        merge_remote(own, store.wal_repo, history=True)
    else:
        merge_archive(own, store.wal_dir(), history=True)


def merge_remote(own: Path, repo: Any, *, history: bool = False) -> int:
    """The restored cluster's archived WAL uploaded into the bucket's ``wal/``: its
    segments (``history`` False), or its history file then the tombstones (True).

    An object of the same name must hold the same bytes (read back and compared, as the
    archive script does): a different one is refused before anything is uploaded or
    swapped (every file is compared before the segments go up). The history file goes
    LAST, once the swap is journaled (``history_in``): until it is there, no restore
    follows the new timeline, so a cut-short upload (re-run: the same bytes are skipped)
    misleads none; a later restore takes a timeline number past its leftovers
    (``timelines.py``)."""
    files = own_files(own)
    todo = []
    for f in files if not history else [f for f in files if _is_history(f)]:
        there = repo.stat(f.name)
        if there is None:
            todo.append(f)
        elif not _same(repo, f, there.size):
            raise Refused(
                f"{repo.where(f.name)} exists with different contents; nothing was swapped",
                hint="another restore was promoted on this timeline: take a base backup "
                "and restore again",
            )
    todo = [f for f in todo if _is_history(f) == history]
    for f in todo:
        repo.put(f.name, f)
    if history:

        def put(name: str, source: Path) -> None:
            if repo.stat(name) is None:
                repo.put(name, source)

        _fill_gaps((o.name for o in repo.list()), put, files, own)
    return len(todo)


def _fill_gaps(names: Iterator[str], put: Any, files: list[Path], own: Path) -> None:
    """Once the new timeline's history file is in the archive: a tombstone history file for
    each number below it without one among ``names`` (its restore skipped the leftovers of
    a cut-short promote), so PostgreSQL's probe reaches the new timeline
    (``timelines.py``). ``put`` writes one only where no history file is: nothing
    replaced."""
    ours = max((timeline_of(f.name) or 0 for f in files if _is_history(f)), default=0)
    for tli in gaps(names, ours) if ours > 2 else []:
        tomb = own.parent / f".tombstone-{history_name(tli)}"
        tomb.write_text(tombstone(tli))
        put(history_name(tli), tomb)
        tomb.unlink()


def _same(repo: Any, f: Path, size: int) -> bool:
    """The object's bytes are ``f``'s: a size apart is different without a download (a
    hostile huge object is never fetched), else compared block by block as it streams."""
    if size != f.stat().st_size:
        return False
    with open(f, "rb") as fh:
        for block in repo.stream(f.name):
            if fh.read(len(block)) != block:
                return False
        return fh.read(1) == b""


def own_files(own: Path) -> list[Path]:
    """The restored cluster's own archive, its history file(s) last."""
    files = sorted(own.iterdir(), key=lambda p: (_is_history(p), p.name))
    return [f for f in files if not f.name.startswith(".")]


def merge_archive(own: Path, archive: Path, *, history: bool) -> int:
    """Copy the restored cluster's archived WAL into the real archive (never overwriting
    different bytes: every file compared, refused before anything is swapped): its
    segments (``history`` False), or its history file then the tombstones (True: once
    the swap is journaled, Docker once the volume copy is done)."""
    files = own_files(own)
    for f in files if not history else [f for f in files if _is_history(f)]:
        dest = archive / f.name
        if dest.exists() and dest.read_bytes() != f.read_bytes():
            raise Refused(
                f"{dest} exists with different contents; nothing was swapped",
                hint="another restore was promoted on this timeline: take a base backup "
                "and restore again",
            )
    moved = sum(_copy_in(f, archive / f.name) for f in files if _is_history(f) == history)
    if history:
        _fill_gaps(
            (p.name for p in archive.iterdir()), lambda n, f: _copy_in(f, archive / n), files, own
        )
    fsync_dir(archive)
    return moved


def _copy_in(f: Path, dest: Path) -> bool:
    """``f`` as ``dest`` (whole: written, fsynced, then linked in), unless ``dest`` exists."""
    if dest.exists():
        return False
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    shutil.copyfile(f, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    try:
        os.link(tmp, dest)
    except FileExistsError:  # another writer's, just now: never replaced
        return False
    finally:
        tmp.unlink()
    give_to_server(dest)
    return True
