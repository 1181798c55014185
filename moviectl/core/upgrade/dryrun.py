"""`db upgrade --dry-run`: the latest backup restored into a throwaway cluster of the old
major, upgraded into a throwaway cluster of the new one, verified, deleted. The live
cluster is only read (a backup is taken when none of this major exists)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.servers.cluster import TEST_OPTIONS
from moviectl.core.servers.upgrade_state import stop_stray
from moviectl.core.upgrade.model import ROLLBACK, Timer, UpgradeResult
from moviectl.core.upgrade.pgupgrade import analyzing
from moviectl.core.upgrade.steps import (
    at_port,
    preflight,
    server_like,
    start_throwaway,
    transfer,
)
from moviectl.core.upgrade.verify import verify_after
from moviectl.infra.errors import MoviectlError
from moviectl.infra.ports import free_port
from moviectl.infra.processes import pid_alive

if TYPE_CHECKING:
    from moviectl.core.backups.manifest import Manifest
    from moviectl.core.servers.cluster import EmbeddedServer
    from moviectl.infra.settings import Settings

PREFIX = ".upgrade-dry-"


def latest_backup(settings: Settings, major: int) -> tuple[Path, Manifest] | None:
    """The newest backup of this database from this major whose drill did not fail."""
    from moviectl.core.backups.manifest import list_backups, load_manifest

    database = settings.target().database
    for entry in sorted(list_backups(settings), key=lambda e: e.created or "", reverse=True):
        if not entry.manifest or entry.verify_result == "mismatch":
            continue
        with contextlib.suppress(MoviectlError, OSError):
            man = load_manifest(Path(entry.path))
            if man.server_major == major and man.database == database:
                return Path(entry.path), man
    return None


def dry_run(
    settings: Settings,
    server: EmbeddedServer,
    old_bin: Path,
    new_bin: Path,
    from_major: int,
    to: int,
    method: str,
    timer: Timer,
) -> UpgradeResult:
    from moviectl.core.backups.restore import create_database_for_restore, load_into

    for left in server.data_dir.glob(PREFIX + "*"):  # what killed dry runs left
        pid = left.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            _destroy(left)
    found = latest_backup(settings, from_major)
    if found is None:
        from moviectl.core.backups.dump import backup

        with timer.phase("backup", "no backup of this major yet: taking one"):
            with server.lock():  # as `db up` starts it (this process holds no lock now)
                server_like(server, server.data_dir, old_bin).start()
            made = backup(settings)
        found = Path(made.path), made.manifest
    path, man = found
    timer.progress(f"dry run from the backup {path}")
    result = UpgradeResult(from_major, to, method, True, str(path), rollback=ROLLBACK[method])
    work = server.data_dir / f"{PREFIX}{os.getpid()}"
    work.mkdir(mode=0o700)
    old = server_like(server, work / "old", old_bin, port=free_port())
    old.options = dict(TEST_OPTIONS)  # throwaway: durability off
    new = server_like(server, work / "new", new_bin, port=free_port())
    new.options = dict(TEST_OPTIONS)
    try:
        with timer.phase("restore", f"restoring it into a throwaway PostgreSQL {from_major}"):
            start_throwaway(old)
            scratch = at_port(settings, old.port)
            create_database_for_restore(scratch, scratch.target().database)
            load_into(scratch, path, man, scratch.target(), None)
        facts, result.traps = preflight(scratch, new_bin, to, timer)
        (work / "new").mkdir(mode=0o700)
        transfer(old, new, method, facts, to, timer)
        with timer.phase("start_new", f"starting the throwaway PostgreSQL {to}"):
            start_throwaway(new)
        says = "verifying against the backup's manifest; statistics meanwhile"
        with timer.phase("verify", says), analyzing(new, to) as analyzed:
            held, failed = verify_after(at_port(settings, new.port), man)
        result.verification += analyzed
        result.verification += held
        result.failures += failed
    except MoviectlError as exc:
        result.failures.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    finally:
        _destroy(work)
    result.phases, result.seconds = timer.phases, timer.total()
    result.next_steps = (
        [f"moviectl db upgrade --to {to} --method {method} --yes"] if result.ok else []
    )
    return result


def _destroy(work: Path) -> None:
    """Both throwaway clusters stopped (by signal: no binaries needed) and deleted."""
    for d in ("new", "old"):
        stop_stray(work / d / "pgdata", timeout=30)
    shutil.rmtree(work, ignore_errors=True)
