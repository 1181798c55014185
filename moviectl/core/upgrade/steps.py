"""The steps a real upgrade and a dry run share: the old cluster checked, the new one made
to match, ``pg_upgrade`` (or dump and restore) from one into the other."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.servers.cluster import EmbeddedServer
from moviectl.core.upgrade.model import Timer, Trap
from moviectl.core.upgrade.pgupgrade import dump_restore, pg_upgrade
from moviectl.core.upgrade.traps import ClusterFacts, check_traps, initdb_options, read_facts
from moviectl.infra.errors import CheckFailed, PortInUse, UsageError
from moviectl.infra.ports import free_port
from moviectl.infra.settings import Secret

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


def at_port(settings: Settings, port: int) -> Settings:
    """These settings pointed at another local port (a throwaway or a new cluster)."""
    t = settings.target()
    return settings.but(
        database_url=None,
        database_direct_url=None,
        db_host="127.0.0.1",
        db_port=port,
        db_user=t.user,
        db_password=Secret(t.password or ""),
        db_name=t.database,
    )


def server_like(
    model: EmbeddedServer, data_dir: Path, bin_dir: Path, *, port: int | None = None
) -> EmbeddedServer:
    return replace(model, data_dir=data_dir, bin_dir=bin_dir, port=port or model.port)


def start_throwaway(server: EmbeddedServer, tries: int = 3) -> None:
    """Start a throwaway cluster on a port picked now, not when it was planned: seconds of
    restore or pg_upgrade lie between, and another process may take a port meanwhile."""
    for attempt in range(tries):
        server.port = free_port()
        try:
            server.start()
            return
        except PortInUse:
            if attempt == tries - 1:
                raise


def preflight(
    settings: Settings, new_bin: Path, to: int, timer: Timer
) -> tuple[ClusterFacts, list[Trap]]:
    """The traps on the running old cluster; any that fails stops here, nothing changed."""
    target = settings.target()
    with timer.phase("checks", "checking the known traps (checksums, extensions, locale, …)"):
        facts = read_facts(target, settings.connect_timeout)
        traps = check_traps(target, settings.connect_timeout, facts, new_bin, to)
    bad = [t for t in traps if not t.ok]
    if bad:
        raise CheckFailed(
            "the upgrade cannot start: " + "; ".join(f"{t.name}: {t.detail}" for t in bad),
            hint="; ".join(t.fix for t in bad) + " (nothing was changed)",
            traps=[t.name for t in bad],
        )
    return facts, traps


def transfer(
    old: EmbeddedServer,
    new: EmbeddedServer,
    method: str,
    facts: ClusterFacts,
    to: int,
    timer: Timer,
    *,
    check_first: bool = True,
) -> None:
    """The new cluster made (matching the old) and filled. The old one is stopped on
    return; ``check_first``: pg_upgrade's ``--check`` runs first as a phase of its own."""
    new.initdb_options = initdb_options(facts, to)
    with timer.phase("stop_old", "stopping the old cluster"):
        old.stop("fast")
    with timer.phase("initdb", f"making the new PostgreSQL {to} cluster"):
        new.init()
    if method == "dump":
        with timer.phase("dump", "dump and restore into the new cluster"):
            old.start()
            start_throwaway(new)  # its port picked now: initdb and the stop took seconds
            try:
                dump_restore(old, new, timer.progress)
            finally:
                new.stop("fast")
                old.stop("fast")
        return
    if check_first:
        with timer.phase("pg_upgrade_check", "pg_upgrade --check"):
            pg_upgrade(old, new, method, check=True, progress=timer.progress)
    with timer.phase("pg_upgrade", f"pg_upgrade --{method}"):
        pg_upgrade(old, new, method, check=False, progress=timer.progress)


def check_swap(method: str, to: int) -> None:
    """``pg_upgrade --swap`` came with PostgreSQL 18: an older new major has none."""
    if method == "swap" and to < 18:
        raise UsageError(
            f"--method swap needs pg_upgrade 18 or newer (PostgreSQL {to}'s has no --swap)",
            hint=f"--method link (or copy, clone, dump) for PostgreSQL {to}; swap for 18+",
        )


def check_direction(from_major: int, to: int) -> None:
    if to < from_major:
        raise UsageError(
            f"refusing to go from PostgreSQL {from_major} to {to}: a major never goes back",
            hint=f"the data is PostgreSQL {from_major}; pick --to {from_major + 1} or newer "
            "(or restore a backup of the older major into a server of that major)",
        )


def remove_tree(path: Path) -> None:
    """Rename aside, then delete: a kill mid-way never leaves half a directory in place."""
    if not path.exists():
        return
    trash = path.with_name(f".deleting-{os.getpid()}-{path.name}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
