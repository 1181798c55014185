"""`moviectl pitr enable`: continuous WAL archiving into the repository.

Embedded: ``moviectl-pitr.conf`` in the cluster (``wal_level = replica``, ``archive_mode
= on``, the archive script, ``archive_timeout``), included from ``postgresql.conf``;
``archive_mode`` takes a restart, which the caller must allow. Docker: see
``pitr/docker.py``. External servers get the one setting to apply, nothing is changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from moviectl.core.pitr import archive_wal
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.server import (
    PITR_CONF,
    PITR_INCLUDE,
    archiver,
    backend_name,
    connect_admin,
    give_to_server,
)
from moviectl.core.pitr.store import LocalStore, make_private_dir
from moviectl.infra.errors import ConfirmationRequired, UsageError
from moviectl.infra.settings import Settings

ARCHIVE_TIMEOUT = 60  # seconds: the most WAL (time) an idle-ish server leaves unarchived
SUMMARIZE_FROM = 17  # summarize_wal (incremental base backups) exists from 17 on


@dataclass
class EnableResult:
    backend: str
    repository: str
    archive_command: str
    changed: bool = False  # a configuration file was written
    restarted: bool = False
    reloaded: bool = False
    instructions: list[str] = field(default_factory=list)  # for a server we do not manage


def conf_text(command: str, major: int = 0) -> str:
    text = (
        "# written by `moviectl pitr enable`: continuous WAL archiving\n"
        "wal_level = replica\n"
        "archive_mode = on\n"
        f"archive_command = '{command}'\n"
        f"archive_timeout = {ARCHIVE_TIMEOUT}\n"
    )
    if major >= SUMMARIZE_FROM:  # what `backup --physical --incremental` needs
        text += "summarize_wal = on\n"
    return text


def major_of(pgdata: Path) -> int:
    try:
        return int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return 0


def prepare_archive(store: LocalStore) -> str:
    """The archive directory and script, usable by the server's user; the command."""
    wal = store.wal_dir()
    make_private_dir(wal)
    give_to_server(wal)
    script = archive_wal.install(store.root / archive_wal.SCRIPT_NAME)
    give_to_server(script)
    return archive_wal.command(script, wal)


def needs_restart(settings: Settings) -> bool:
    """Would enabling restart the server (running, archive_mode not on yet)?"""
    name = backend_name(settings)
    if name == "docker":
        from moviectl.core.pitr import docker

        store = store_of(settings)
        return isinstance(store, LocalStore) and docker.needs_restart(settings, store)
    if name != "embedded":
        return False
    from moviectl.core.servers.embedded import embedded_server

    if not embedded_server(settings).state().running:
        return False
    with connect_admin(settings) as conn:
        live = archiver(conn)
    return not live.on or live.wal_level == "minimal"


def enable(settings: Settings, *, restart: bool = False) -> EnableResult:
    store = store_of(settings)
    name = backend_name(settings)
    if not isinstance(store, LocalStore):  # pragma: no cover - both stores are local-based
        raise UsageError("WAL archiving needs a local or s3:// repository")
    remote = hasattr(store, "archive_command")
    if remote and name != "embedded":
        raise UsageError(
            f"WAL archiving into {store.describe()} is set up for the embedded server only",
            hint="unset MOVIE_BACKUP_REPO for a local archive (Docker, external servers)",
        )
    if name == "docker":
        from moviectl.core.pitr import docker

        done = docker.enable(settings, store, restart=restart, archive_timeout=ARCHIVE_TIMEOUT)
        return EnableResult(
            name, store.describe(), done.command, done.changed, done.restarted, done.reloaded
        )
    if name != "embedded":
        return _instructions(settings, name, store)
    from moviectl.core.servers.embedded import embedded_server

    server = embedded_server(settings)
    if not server.initialized():
        raise UsageError(
            f"no embedded cluster in {server.pgdata} yet", hint="start it with `moviectl db up`"
        )
    restart_needed = needs_restart(settings)
    if restart_needed and not restart:
        raise ConfirmationRequired(
            "turning archive_mode on restarts the embedded server (a few seconds offline)",
            hint="re-run with --yes to restart it now",
        )
    if remote:  # reachable before anything changes; its script and env file
        store.wal_repo.check()  # type: ignore[attr-defined]
        command = store.archive_command(store.root / "s3-wal")  # type: ignore[attr-defined]
    else:
        command = prepare_archive(store)
    result = EnableResult(name, store.describe(), command)
    result.changed = write_conf(server.pgdata, conf_text(command, major_of(server.pgdata)))
    running = server.state().running
    if restart_needed:
        with server.lock():
            server.stop("fast")
            server.start()
        result.restarted = True
    elif running and result.changed:
        with connect_admin(settings) as conn:
            conn.execute("SELECT pg_reload_conf()")
        result.reloaded = True
    return result


def write_conf(pgdata: Path, text: str) -> bool:
    """``moviectl-pitr.conf`` and its include line; whether anything changed."""
    changed = False
    conf = pgdata / "postgresql.conf"
    if PITR_INCLUDE not in conf.read_text(errors="replace").splitlines():
        with open(conf, "a") as fh:  # after moviectl.conf's include: these settings win
            fh.write(f"{PITR_INCLUDE}\n")
        changed = True
    path = pgdata / PITR_CONF
    if not path.exists() or path.read_text() != text:
        tmp = pgdata / f".{PITR_CONF}.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o600)
        give_to_server(tmp)
        os.replace(tmp, path)
        changed = True
    return changed


def _instructions(settings: Settings, name: str, store: LocalStore) -> EnableResult:
    """What to apply on a server moviectl does not configure (nothing is changed there)."""
    target = settings.target()
    with connect_admin(settings) as conn:  # what the server does now (and that it answers)
        live = archiver(conn)
    wal = store.wal_dir()
    script = store.root / archive_wal.SCRIPT_NAME
    steps = [
        f"on the database host, install the archive script: `moviectl pitr script > {script}`"
        f" and `chmod 755 {script}`; make {wal} (a mount of the repository) writable by the "
        "server's user",
        "in postgresql.conf: wal_level = replica, archive_mode = on, "
        f"archive_command = '{archive_wal.command(script, wal)}', archive_timeout = "
        f"{ARCHIVE_TIMEOUT} (17+: summarize_wal = on, for incremental base backups); "
        "then restart the server",
        "or, without access to the server's host: `pg_receivewal -D "
        f"{wal} --slot moviectl_pitr --create-slot --if-not-exists -d 'host={target.host} "
        f"port={target.port} user={target.user}'` then the same without --create-slot, "
        "kept running (a service)",
        "check with `moviectl pitr status` (pg_stat_archiver: last archived, failures)",
    ]
    if live.on:
        steps.insert(
            0, f"archiving is on there already: archive_command = '{live.archive_command}'"
        )
    return EnableResult(name, store.describe(), "", instructions=steps)
