"""`moviectl pitr promote NAME`: swap a restored cluster in for the managed server.

Nothing is deleted: the old ``pgdata`` is renamed to ``pgdata.before-<time>`` (the safety
snapshot: move it back to undo), the restored one takes its place (journaled in
``promoting.json``: a killed promote is finished by running it again; ``db up`` refuses
meanwhile), and the WAL the
restored cluster archived into its own archive joins the real one, so the archive covers
the new timeline from its first segment. The new timeline's history file goes in LAST and
only once the swap is journaled (Docker: once the volume copy is done): a history file in
the archive makes a later
``restore --latest`` follow that timeline, so a promote killed before it and given up
(``pitr discard``, refused once journaled) leaves none; a later restore takes a number past
its leftovers, and the promote writes a tombstone history file for each lower timeline
number without one (``timelines.py``). With an ``s3://`` repository (embedded only) the
files are uploaded into its ``wal/`` (nothing replaced) and the promoted server archives
there too.
Docker: the data volume's old contents are copied into a new volume first (``docker.py``),
journaled the same way (``_docker``; ``db up`` is not refused: the volume is never empty).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviectl.core.pitr.enable import conf_text, major_of, write_conf
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.restore import RECORD, restores_dir, server_of
from moviectl.core.pitr.server import PITR_CONF, backend_name, give_to_server
from moviectl.core.pitr.store import fsync_dir
from moviectl.core.pitr.timelines import gaps, history_name, timeline_of, tombstone
from moviectl.core.servers import swap_journal, upgrade_state
from moviectl.infra.errors import MoviectlError, Refused, ServerError, UsageError
from moviectl.infra.held_signals import held
from moviectl.infra.settings import Settings


@dataclass
class PromoteResult:
    name: str
    pgdata: str
    snapshot: str | None  # the old cluster, kept whole
    timeline: int
    wal_moved: int
    next_step: str = "take a base backup of the new timeline: moviectl backup --physical"


@contextlib.contextmanager
def promote_lock(settings: Settings) -> Iterator[None]:
    """One promote at a time (``MOVIE_DATA_DIR/.promote.lock``, flock): a second is refused
    at once rather than swapping the cluster the first one just swapped in."""
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".promote.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            raise Refused(
                f"another promote is running (pid {fh.read().strip() or '?'}); nothing done",
                hint="wait for it, then see `moviectl pitr status`",
            ) from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def promote(settings: Settings, name: str, *, locked: bool = False) -> PromoteResult:
    """``locked``: the caller holds ``promote_lock`` (``restore --physical --promote``)."""
    if not locked:
        with promote_lock(settings):
            return promote(settings, name, locked=True)
    backend = backend_name(settings)
    if backend not in ("embedded", "docker"):
        raise UsageError(
            "`pitr promote` swaps clusters of the embedded and Docker backends only",
            hint="for another server, point the app at the restored cluster's port",
        )
    path = restores_dir(settings) / name
    store = store_of(settings)
    if hasattr(store, "wal_repo") and backend != "embedded":
        raise UsageError(
            f"`pitr promote` with an object-storage repository ({store.describe()}) is for "
            "the embedded backend only: a Docker server's archive_command runs in its "
            "container, which has neither rclone nor the bucket's keys; nothing was swapped",
            hint="point the app at the restored cluster's port, or use a local repository "
            "(MOVIE_BACKUP_REPO unset) with the Docker backend",
        )
    if backend == "embedded":
        return _embedded(settings, name, path, store)
    return _docker(settings, name, path, store)


def _docker(settings: Settings, name: str, path: Path, store: Any) -> PromoteResult:
    """As ``_embedded``: the segments in, the swap journaled (``pitr discard`` refused from
    then on), the volume copy (``docker.py``), and the history file only once the copy is
    done, so a promote cut short before the journal and given up leaves none. A re-run
    finishes from the journal; the copy again unless the journal says it was done (a copy
    cut short runs in a helper container that outlives moviectl)."""
    from moviectl.core.pitr import docker

    data_dir = Path(settings.data_dir)
    j = swap_journal.read(data_dir)
    _refuse_another(j, name)
    if j is None:
        docker.preflight(settings)  # nothing stopped or merged when the copy cannot run
        record = _record(path, name)
        restored = server_of(settings, path, int(record["port"]))
        restored.stop("fast")  # its last segments reach its own archive first
        moved = _merge_archive(path / "archive", store.wal_dir(), history=False)
        tli = int(record["timeline"])
        j = {"name": name, "pid": os.getpid(), "aside": None, "timeline": tli, "wal_moved": moved}
        swap_journal.write(data_dir, j)
    try:
        if "volume" not in j:
            j["volume"], j["aside"] = docker.promote(settings, path, store)
            swap_journal.write(data_dir, j)  # swapped: a re-run copies nothing over it
        _history_in(path / "archive", store)
        doomed = path.with_name(f".promoted-{path.name}-{os.getpid()}")
        if path.exists():
            os.rename(path, doomed)
        swap_journal.remove(data_dir)
    except BaseException as exc:
        exc.add_note(f"promote cut short; finish it: moviectl pitr promote {name} --yes")
        raise
    shutil.rmtree(doomed, ignore_errors=True)
    volume, before = f"volume {j['volume']}", f"volume {j['aside']}"
    return PromoteResult(name, volume, before, j["timeline"], j["wal_moved"])


def _refuse_another(j: dict[str, Any] | None, name: str) -> None:
    if j is not None and j["name"] != name:
        raise Refused(
            f"an interrupted promote of {j['name']} must be finished first",
            hint=f"moviectl pitr promote {j['name']} --yes",
        )


def _record(path: Path, name: str) -> dict[str, Any]:
    try:
        return dict(json.loads((path / RECORD).read_text()))
    except OSError:
        raise UsageError(
            f"no restored cluster named {name!r} in {path.parent}",
            hint="list them with `moviectl pitr status`",
        ) from None


def _embedded(settings: Settings, name: str, path: Path, store: Any) -> PromoteResult:
    """The swap, journaled (``swap_journal``): every step below can be cut by kill -9 and
    re-run by ``pitr promote NAME``, which reads the journal and finishes what is left."""
    from moviectl.core.servers.embedded import embedded_server

    main = embedded_server(settings)
    remote = hasattr(store, "wal_repo")
    with main.lock():
        j = swap_journal.read(main.data_dir)
        fresh = False
        _refuse_another(j, name)
        if j is None:
            if upgrade_state.read_state(main.data_dir) is not None:  # pgdata is its to move
                raise Refused(
                    "a `db upgrade` of this cluster is unfinished; nothing was swapped",
                    hint="moviectl db upgrade --finish --yes (or --rollback --yes) first",
                )
            record = _record(path, name)
            restored = server_of(settings, path, int(record["port"]))
            if remote:  # before anything stops: an unreachable bucket changes nothing
                was = "still runs" if restored.state().running else "is stopped, its WAL kept"
                with _nothing_swapped(name, was):
                    store.wal_repo.check()
            restored.stop("fast")  # its last WAL reaches its own archive
            if remote:
                with _nothing_swapped(name, "is stopped, its WAL kept"):
                    moved = _merge_remote(path / "archive", store.wal_repo)
            else:  # all but the history file: it goes in once journaled
                moved = _merge_archive(path / "archive", store.wal_dir(), history=False)
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
            aside = main.pgdata.with_name(f"pgdata.before-{stamp}")
            j = {
                "name": name,
                "pid": os.getpid(),
                "restored": str(path / "pgdata"),
                "aside": str(aside) if main.pgdata.exists() else None,
                "timeline": int(record["timeline"]),
                "wal_moved": moved,
            }
            fresh = True
        # s3: the promoted server archives into the bucket as `pitr enable` set it up (the
        # same script and env file, written afresh once the bucket answered)
        command = store.archive_command(store.root / "s3-wal") if remote else None
        try:
            if fresh:
                swap_journal.write(main.data_dir, j)
            _history_in(path / "archive", store)  # journaled: finished, never discarded
            doomed = _swap(main, j, path, command)
        except BaseException as exc:
            if swap_journal.read(main.data_dir) is not None:
                exc.add_note(f"promote cut short; finish it: moviectl pitr promote {name} --yes")
            raise
    shutil.rmtree(doomed, ignore_errors=True)
    aside = j["aside"]
    return PromoteResult(name, str(main.pgdata), aside, j["timeline"], j["wal_moved"])


def _swap(main: Any, j: dict[str, Any], path: Path, command: str | None) -> Path:
    """From wherever a killed run stopped: old aside, restored in, archiving, start.
    ``command``: the s3 archive_command (else the old cluster's archiving is kept)."""
    restored = Path(j["restored"])
    aside = Path(j["aside"]) if j["aside"] else None
    if restored.exists():
        main.stop("fast")
        with held():  # SIGTERM / Ctrl-C never land between the two renames
            if main.pgdata.exists():
                if aside is None or aside.exists():
                    raise Refused(
                        f"{main.pgdata} appeared while a promote was unfinished; nothing moved",
                        hint=f"move it away, then re-run `moviectl pitr promote {j['name']}`",
                    )
                os.rename(main.pgdata, aside)
            os.rename(restored, main.pgdata)
            fsync_dir(main.pgdata.parent)
    elif not main.pgdata.exists():
        raise ServerError(f"neither {restored} nor {main.pgdata} exists; nothing to promote")
    conf = main.pgdata / PITR_CONF
    if command is not None:
        write_conf(main.pgdata, conf_text(command, major_of(main.pgdata)))
    elif aside is not None and (aside / PITR_CONF).exists() and not conf.exists():
        tmp = conf.with_name(f".{PITR_CONF}.tmp")  # archiving, as before (whole or absent)
        shutil.copy2(aside / PITR_CONF, tmp)
        give_to_server(tmp)
        os.rename(tmp, conf)
    main.start()
    doomed = path.with_name(f".promoted-{path.name}-{os.getpid()}")
    if path.exists():  # no longer listed; the next restore removes it if cut short
        os.rename(path, doomed)
    swap_journal.remove(main.data_dir)
    return doomed


@contextlib.contextmanager
def _nothing_swapped(name: str, state: str) -> Iterator[None]:
    """The bucket's error (unreachable, refused keys...) as it was, saying nothing moved."""
    try:
        yield
    except Refused:
        raise
    except MoviectlError as exc:
        raise type(exc)(
            f"{exc.message}; nothing was swapped, {name} {state}",
            hint=f"{exc.hint or 'fix the repository'}; then re-run "
            f"`moviectl pitr promote {name} --yes`",
        ) from None


def _is_history(f: Path) -> bool:
    return f.name.endswith(".history")


def _history_in(own: Path, store: Any) -> None:
    """The new timeline's history file into the archive, then the tombstones below it.
    Run only once the swap is journaled (and by every re-run: the same bytes are skipped),
    so a promote killed before the journal and given up (``pitr discard``) leaves no
    history file to lead a later ``--latest`` restore onto a timeline never swapped in.
    The restore's directory is gone only once the promoted cluster runs: done before."""
    if not own.is_dir():
        return
    if hasattr(store, "wal_repo"):
        _merge_remote(own, store.wal_repo, history=True)
    else:
        _merge_archive(own, store.wal_dir(), history=True)


def _merge_remote(own: Path, repo: Any, *, history: bool = False) -> int:
    """The restored cluster's archived WAL uploaded into the bucket's ``wal/``: its
    segments (``history`` False), or its history file then the tombstones (True).

    An object of the same name must hold the same bytes (read back and compared, as the
    archive script does): a different one is refused before anything is uploaded or
    swapped (every file is compared before the segments go up). The history file goes
    LAST, once the swap is journaled (``_history_in``): until it is there, no restore
    follows the new timeline, so a cut-short upload (re-run: the same bytes are skipped)
    misleads none; a later restore takes a timeline number past its leftovers
    (``timelines.py``)."""
    files = _own_files(own)
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


def _own_files(own: Path) -> list[Path]:
    """The restored cluster's own archive, its history file(s) last."""
    files = sorted(own.iterdir(), key=lambda p: (_is_history(p), p.name))
    return [f for f in files if not f.name.startswith(".")]


def _merge_archive(own: Path, archive: Path, *, history: bool) -> int:
    """Copy the restored cluster's archived WAL into the real archive (never overwriting
    different bytes: every file compared, refused before anything is swapped): its
    segments (``history`` False), or its history file then the tombstones (True: once
    the swap is journaled, Docker once the volume copy is done)."""
    files = _own_files(own)
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
