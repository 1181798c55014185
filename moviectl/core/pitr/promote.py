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
journaled the same way (``promote_docker.py``; ``db up`` is not refused: the volume is never
empty).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moviectl.core.pitr.enable import conf_text, major_of, write_conf
from moviectl.core.pitr.promote_common import (
    PromoteResult,
    history_in,
    merge_archive,
    merge_remote,
    record_of,
    refuse_another,
    refuse_other_backend,
)
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.restore import restores_dir, server_of
from moviectl.core.pitr.server import PITR_CONF, backend_name, give_to_server
from moviectl.core.pitr.store import fsync_dir
from moviectl.core.servers import swap_journal, upgrade_state
from moviectl.infra.errors import MoviectlError, Refused, ServerError, UsageError
from moviectl.infra.held_signals import held
from moviectl.infra.settings import Settings


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
    from moviectl.core.pitr.promote_docker import promote_docker

    return promote_docker(settings, name, path, store)


def _embedded(settings: Settings, name: str, path: Path, store: Any) -> PromoteResult:
    """The swap, journaled (``swap_journal``): every step below can be cut by kill -9 and
    re-run by ``pitr promote NAME``, which reads the journal and finishes what is left."""
    from moviectl.core.servers.embedded import embedded_server

    main = embedded_server(settings)
    remote = hasattr(store, "wal_repo")
    with main.lock():
        j = swap_journal.read(main.data_dir)
        fresh = False
        refuse_another(j, name)
        refuse_other_backend(j, swap_journal.path_of(main.data_dir), docker=False)
        if j is None:
            if upgrade_state.read_state(main.data_dir) is not None:  # pgdata is its to move
                raise Refused(
                    "a `db upgrade` of this cluster is unfinished; nothing was swapped",
                    hint="moviectl db upgrade --finish --yes (or --rollback --yes) first",
                )
            record = record_of(path, name)
            restored = server_of(settings, path, int(record["port"]))
            if remote:  # before anything stops: an unreachable bucket changes nothing
                was = "still runs" if restored.state().running else "is stopped, its WAL kept"
                with _nothing_swapped(name, was):
                    store.wal_repo.check()
            restored.stop("fast")  # its last WAL reaches its own archive
            if remote:
                with _nothing_swapped(name, "is stopped, its WAL kept"):
                    moved = merge_remote(path / "archive", store.wal_repo)
            else:  # all but the history file: it goes in once journaled
                moved = merge_archive(path / "archive", store.wal_dir(), history=False)
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
            history_in(path / "archive", store)  # journaled: finished, never discarded
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
