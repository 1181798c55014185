"""`db upgrade --dry-run` on Docker: the latest backup restored into a throwaway container
of the new image on a throwaway volume (project ``<project>-upgdry<pid>``, a free port),
verified, deleted. The live container and volume are only read (a backup is taken when
none of this major exists); what a killed dry run left is removed by the next one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.servers.docker import DockerBackend
from moviectl.core.servers.docker_upgrade import leftover_dry_runs
from moviectl.core.upgrade.docker_steps import ROLLBACK, analyze_in, restore_into
from moviectl.core.upgrade.dryrun import latest_backup
from moviectl.core.upgrade.model import Timer, UpgradeResult
from moviectl.core.upgrade.steps import at_port
from moviectl.core.upgrade.verify import verify_after
from moviectl.infra.errors import MoviectlError
from moviectl.infra.ports import free_port

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


def dry_run(
    settings: Settings,
    backend: DockerBackend,
    old_image: str,
    new_image: str,
    from_major: int,
    to: int,
    timer: Timer,
) -> UpgradeResult:
    project = backend.svc.project
    for left in leftover_dry_runs(backend.client, project):
        _destroy(settings, left)
    found = latest_backup(settings, from_major)
    if found is None:
        from moviectl.core.backups.dump import backup

        with timer.phase("backup", "no backup of this major yet: taking one"):
            DockerBackend(settings.but(db_image=old_image)).up(timeout=120)
            made = backup(settings)
        found = Path(made.path), made.manifest
    path, man = found
    timer.progress(f"dry run from the backup {path}")
    result = UpgradeResult(from_major, to, "dump", True, str(path), rollback=ROLLBACK)
    throwaway = f"{project}-upgdry{os.getpid()}"
    scratch = at_port(settings, free_port()).but(compose_project=throwaway, db_image=new_image)
    try:
        with timer.phase("initdb", f"a throwaway PostgreSQL {to} container ({new_image})"):
            new = DockerBackend(scratch)
            new.up(timeout=120)
        with timer.phase("restore", f"restoring the backup into PostgreSQL {to}"):
            restore_into(scratch, path, man, None)
        with timer.phase("verify", "verifying against the backup's manifest; ANALYZE"):
            held, failed = verify_after(scratch, man)
            result.verification.append(analyze_in(new.container(), scratch))
        result.verification += held
        result.failures += failed
    except MoviectlError as exc:
        result.failures.append(exc.message + (f" ({exc.hint})" if exc.hint else ""))
    finally:
        _destroy(settings, throwaway)
    result.phases, result.seconds = timer.phases, timer.total()
    result.next_steps = (
        [f"moviectl db upgrade --to {to} --image {new_image} --yes"] if result.ok else []
    )
    return result


def _destroy(settings: Settings, project: str) -> None:
    """The throwaway container, network and volume removed (and the lock file beside, and
    the copy of the password its container read: never left behind per dry run)."""
    from moviectl.core.servers.docker_engine import password_file

    scratch = settings.but(compose_project=project)
    DockerBackend(scratch).down(volumes=True)
    with contextlib.suppress(OSError):
        (Path(settings.data_dir) / f".docker-{project}.lock").unlink()
    with contextlib.suppress(OSError):
        password_file(scratch).unlink()
