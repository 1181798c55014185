"""`db upgrade --rollback` after ``--method swap``: pg_upgrade took the old cluster apart,
so the way back is the upgrade's safety backup (verified by its restore drill before
anything changed), restored into a new cluster of the old major.

What it replaces (the new cluster, or what a killed swap left) is moved into ``.upgrade/``
first and deleted only once the restored cluster holds what the backup's manifest says;
a rollback killed or failed half-way is in phase ``restoring`` and simply runs again.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.servers.upgrade_state import (
    WORK_DIR,
    clear_state,
    old_dir,
    stop_stray,
    write_state,
)
from moviectl.core.upgrade.model import FinishResult
from moviectl.core.upgrade.steps import remove_tree, server_like
from moviectl.infra.errors import CheckFailed, MoviectlError, Refused, from_os_error

if TYPE_CHECKING:
    from moviectl.core.servers.cluster import EmbeddedServer
    from moviectl.infra.settings import Settings


def restore_safety_backup(
    settings: Settings, server: EmbeddedServer, state: dict[str, Any]
) -> FinishResult:
    from moviectl.core.backups.dump import snapshot
    from moviectl.core.backups.manifest import load_manifest
    from moviectl.core.backups.restore import compare
    from moviectl.core.upgrade.docker_steps import restore_into

    data_dir, pgdata = server.data_dir, server.pgdata
    from_major, to = int(state["from"]), int(state["to"])
    backup = Path(str(state.get("backup") or ""))
    if not state.get("backup") or not backup.is_file():
        raise Refused(
            f"cannot roll back: the safety backup {state.get('backup')} of the swap "
            "upgrade is gone, and --swap took the old cluster apart",
            hint="restore another backup of this database into a new cluster "
            "(moviectl restore), or keep the new one (--finish)",
        )
    man = load_manifest(backup)  # before anything moves: a bad file changes nothing
    work = data_dir / WORK_DIR
    for d in (pgdata, old_dir(data_dir, from_major), work / "pgdata"):
        stop_stray(d)  # the new server, or what a killed run left
    work.mkdir(exist_ok=True)
    again = (
        f"what it replaces is kept in {work} (replaced-*); free space if the disk is full "
        f"(or delete {work}/replaced-* knowingly), then moviectl db upgrade --rollback "
        "--yes runs it again"
    )
    old = server_like(server, data_dir, Path(state["old_bin"]))
    try:
        # on record before anything moves (a full disk fails here, nothing moved): `db up`
        # then refuses, and `db up` after a done swap never starts an empty cluster
        state.update(phase="restoring", pid=os.getpid())
        write_state(data_dir, state)
        for d in (pgdata, old_dir(data_dir, from_major)):
            kept = work / f"replaced-{d.name}"
            if d.exists() and not kept.exists():  # kept until the restore is verified
                os.rename(d, kept)
        if pgdata.exists():  # replaced before: a killed or failed rollback's own cluster
            remove_tree(pgdata)
        old.start()  # initdb of a new, empty PostgreSQL {from_major} cluster
        restore_into(settings, backup, man, state.get("mark"))
        _, _, rev, counts = snapshot(settings, settings.target())
        diffs = compare(man, rev, counts)
        if diffs:
            raise CheckFailed(
                f"the restored cluster differs from the safety backup's manifest: {diffs[0]}"
            )
    except (MoviectlError, OSError) as exc:
        stop_stray(pgdata)  # a half-restored cluster serves nobody
        failed = exc if isinstance(exc, MoviectlError) else from_os_error(exc)
        failed.message = f"--rollback failed: {failed.message}"
        failed.hint = f"{failed.hint}; {again}" if failed.hint and failed is exc else again
        if failed is exc:
            raise
        raise failed from exc
    shutil.rmtree(work, ignore_errors=True)
    clear_state(data_dir)
    return FinishResult(
        "rollback",
        from_major,
        to,
        f"the PostgreSQL {to} cluster (the safety backup {backup} was restored)",
        f"PostgreSQL {from_major} is back in {pgdata} and running, holding the safety "
        f"backup's data; `moviectl db up` needs MOVIE_PG_BIN_DIR={state['old_bin']}",
    )
