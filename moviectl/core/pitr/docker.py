"""PITR on the Docker backend: the WAL archive bind-mounted into the db container.

`pitr enable` records the repository as a bind mount of the db container (the same path
inside as outside, so one ``archive_command`` serves both sides) and recreates the
container with it (the data volume kept), then sets the archive settings with ALTER SYSTEM
(``postgresql.auto.conf`` in the volume: any image's entrypoint keeps them, where a
``command:`` is ignored by some) and a ``host replication`` line for ``pg_basebackup``,
and restarts the container once. Base backups and restores then run on this host as for
the embedded server (restores with server binaries of the container's major).

`pitr promote` copies a restored cluster into the data volume after copying the old
contents into a new volume ``<volume>-before-<time>`` (the safety snapshot).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviectl.core.pitr import archive_wal
from moviectl.core.pitr.server import archiver, connect_admin
from moviectl.core.pitr.store import LocalStore, make_private_dir
from moviectl.core.servers.base import not_ready_yet, ready_version
from moviectl.core.servers.docker import DockerBackend
from moviectl.core.servers.docker_engine import binds_path, labels, promote_copy_name
from moviectl.infra.errors import ConfirmationRequired, LockBusy, ServerError, UsageError
from moviectl.infra.settings import Settings
from moviectl.infra.waiting import poll_until

HBA_LINE = "host replication all all scram-sha-256"  # pg_basebackup through the port


def _running(backend: DockerBackend) -> Any:
    c = backend.container()
    if c is None or c.status != "running":
        raise UsageError(
            f"the db container {backend.svc.container_name} is not running",
            hint="start it with `moviectl db up`",
        )
    return c


def _binds(store: LocalStore) -> dict[str, str]:
    return {str(store.root): str(store.root)}


def needs_restart(settings: Settings, store: LocalStore) -> bool:
    """Would enabling restart the db container (no archive mount, or archiving off)?"""
    backend = DockerBackend(settings)
    c = backend.container()
    if c is None or c.status != "running":
        return False
    mounted = [b.split(":")[0] for b in (c.attrs.get("HostConfig") or {}).get("Binds") or []]
    if str(store.root) not in mounted:
        return True
    with connect_admin(settings) as conn:
        live = archiver(conn)
    return not live.on or live.wal_level == "minimal"


@dataclass
class Enabled:
    command: str
    changed: bool = False
    restarted: bool = False
    reloaded: bool = False


def enable(
    settings: Settings, store: LocalStore, *, restart: bool, archive_timeout: int
) -> Enabled:
    backend = DockerBackend(settings)
    _running(backend)
    restart_needed = needs_restart(settings, store)
    if restart_needed and not restart:
        raise ConfirmationRequired(
            "turning archive_mode on restarts the db container (a few seconds offline)",
            hint="re-run with --yes to restart it now",
        )
    wal = store.wal_dir()
    make_private_dir(wal)
    script = archive_wal.install(store.root / archive_wal.SCRIPT_NAME)
    command = archive_wal.command(script, wal)
    result = Enabled(command)
    path = binds_path(settings, backend.svc.project)
    recorded = json.loads(path.read_text()) if path.exists() else None
    if recorded != _binds(store):
        path.write_text(json.dumps(_binds(store)))
        result.changed = True
    backend.svc.binds = _binds(store)
    backend.up()  # recreated with the mount when it lacks it (the data volume kept)
    c = _running(backend)
    uid, gid = _server_user(c)
    _hand_to(script, uid, gid)
    _hand_to(wal, uid, _restore_gid() or gid)
    if os.geteuid() == 0:  # files inherit the group: restores on this host read them
        wal.chmod(0o2750)
        for f in wal.iterdir():  # archived before (the script makes them 0640 now)
            os.chown(f, -1, _restore_gid() or gid)
            f.chmod(0o640)
    settings_now = {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": command,
        "archive_timeout": str(archive_timeout),  # seconds
    }
    with connect_admin(settings) as conn:
        if int(conn.execute("SHOW server_version_num").fetchone()[0]) >= 170000:
            settings_now["summarize_wal"] = "on"  # incremental base backups (17+)
        for name, value in settings_now.items():
            row = conn.execute("SELECT setting FROM pg_settings WHERE name = %s", (name,))
            if row.fetchone()[0] != value:
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")  # values are ours
                result.changed = True
    hba = (
        f"grep -qxF '{HBA_LINE}' \"$PGDATA/pg_hba.conf\" || "
        f"echo '{HBA_LINE}' >> \"$PGDATA/pg_hba.conf\""
    )
    _exec(c, hba, user="postgres")
    if restart_needed:
        c.restart(timeout=30)
        _wait(backend)
        result.restarted = True
    else:
        with connect_admin(settings) as conn:
            conn.execute("SELECT pg_reload_conf()")
        result.reloaded = True
    return result


def _exec(c: Any, script: str, *, user: str = "root") -> str:
    code, output = c.exec_run(["sh", "-c", script], user=user)
    text = (output or b"").decode(errors="replace").strip()
    if code != 0:
        raise ServerError(f"in container {c.name}: `{script}` failed: {text}")
    return str(text)


def _server_user(c: Any) -> tuple[int, int]:
    """The uid and gid the image's postgres runs as (999 in the official image, not all)."""
    uid, gid = _exec(c, "id -u postgres; id -g postgres").split()
    return int(uid), int(gid)


def _hand_to(path: Path, uid: int, gid: int) -> None:
    """Owned by the container's server user; each ancestor traversable (o+x)."""
    if os.geteuid() != 0:  # pragma: no cover - a rootless engine maps users itself
        return
    os.chown(path, uid, gid)
    for p in path.parents:
        try:
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o001)
        except OSError:
            pass


def _restore_gid() -> int | None:
    """As root, restores run as the embedded server's user: the archive's group is its."""
    if os.geteuid() != 0:
        return None
    import pwd

    from moviectl.core.servers.cluster import SYSTEM_USER, ensure_system_user

    ensure_system_user()
    return pwd.getpwnam(SYSTEM_USER).pw_gid


def _wait(backend: DockerBackend, timeout: float = 90) -> None:
    target = backend.settings.target()
    poll_until(lambda: ready_version(target, 2), timeout, 0.3, retry=not_ready_yet)


def preflight(settings: Settings) -> None:
    """What `promote` needs, checked before the promote stops or merges anything: a named
    data volume, the db container running, the image its copy runs in present."""
    backend = DockerBackend(settings)
    if not backend.svc.volume_name:
        raise UsageError("the compose file's db service has no named data volume to swap")
    _running(backend)
    if not backend.image_present():
        raise UsageError(
            f"the image {backend.svc.image} (the volume copy runs in it) is not on this "
            "host; nothing was swapped",
            hint="set MOVIE_DB_IMAGE to the db container's image, then re-run the promote",
        )


def _helper(backend: DockerBackend) -> Any:
    """The volume copy's helper container (``<db container>-promote-copy``, one at a time:
    a name taken is a copy not yet accounted for), or None. Still running: refused."""
    import docker.errors

    name = promote_copy_name(backend.svc)
    try:
        left = backend.client.containers.get(name)
    except docker.errors.NotFound:
        return None
    if left.status in ("running", "restarting", "paused"):  # "created": never copied
        raise LockBusy(
            f"the volume copy of a cut-short promote still runs (container {name}); "
            "nothing was done",
            hint="wait for it to exit (`docker ps -a`), then re-run the promote",
        )
    return left


def copy_done(settings: Settings) -> str | None:
    """A cut-short promote's copy that finished (its helper exited 0, kept until the
    journal records the copy): the snapshot volume it filled. Any other helper is removed
    (it put the old contents back, or never copied): None."""
    backend = DockerBackend(settings)
    left = _helper(backend)
    if left is None:
        return None
    code = (left.attrs.get("State") or {}).get("ExitCode")
    mounts = {m.get("Destination"): m.get("Name") for m in left.attrs.get("Mounts") or []}
    done = left.status == "exited" and code == 0  # a "created" one says 0 too
    if done and mounts.get("/data") == backend.svc.volume_name:
        return mounts.get("/before")
    left.remove(force=True)
    return None


def drop_helper(settings: Settings) -> None:
    """Once the journal records the copy: its helper container goes."""
    import docker.errors

    left = _helper(DockerBackend(settings))
    if left is not None:
        with contextlib.suppress(docker.errors.NotFound):
            left.remove(force=True)


def serving(settings: Settings) -> None:
    """The db container running, as `db up` starts it: a promote killed during its copy
    left it stopped, and a re-run that finds the copy done copies (and starts) nothing."""
    backend = DockerBackend(settings)
    c = backend.container()
    if c is None or c.status != "running":
        backend.up()


def promote(
    settings: Settings,
    path: Path,
    store: LocalStore,
    copying: Callable[[str], None] | None = None,
) -> tuple[str, str]:
    """Copy the restored cluster in ``path`` (stopped) into the db container's volume; the
    caller removes ``path`` (`pitr promote` journals the swap: ``promote_docker.py``).
    ``copying``: told the snapshot volume's name before the db container stops.

    Returns (the data volume, the snapshot volume with the old contents)."""
    from moviectl.core.servers.cluster import CONF_NAME

    backend = DockerBackend(settings)
    svc = backend.svc
    volume = svc.volume_name
    if not volume:
        raise UsageError("the compose file's db service has no named data volume to swap")
    pgdata = path / "pgdata"
    if not pgdata.is_dir():  # a bind mount of a missing path would be made, empty
        raise UsageError(f"the restored cluster {pgdata} is gone; nothing was swapped")
    left = _helper(backend)
    if left is not None:  # accounted for by the caller (``copy_done``)
        left.remove(force=True)
    (pgdata / CONF_NAME).unlink(missing_ok=True)  # the restore's port, listen and commands
    auto = pgdata / "postgresql.auto.conf"
    command = archive_wal.command(store.root / archive_wal.SCRIPT_NAME, store.wal_dir())
    with open(auto, "a") as fh:  # the restore ran without it: archiving as before
        fh.write(f"archive_command = '{command}'\n")
    c = _running(backend)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%Sz")
    before = f"{volume}-before-{stamp}"
    names = {v.name for v in backend.client.volumes.list(filters={"name": before})}
    # creating an existing name returns that volume: a re-run within the same second
    # would copy over the first run's snapshot
    before += f"-{len(names) + 1}" if before in names else ""
    backend.client.volumes.create(before, labels=labels(svc, backend.owner))
    if copying is not None:
        copying(before)
    c.stop(timeout=30)
    # never an empty volume left behind: the image's entrypoint would initdb a fresh, empty
    # cluster into it on start. Any failure after the snapshot puts the old contents back.
    swap = (
        "set -e; cp -a /data/. /before/; sync;"
        " back() { find /data -mindepth 1 -delete; cp -a /before/. /data/; exit 3; };"
        " find /data -mindepth 1 -delete || back; cp -a /restored/. /data/ || back;"
        " { chown -R postgres:postgres /data && chmod 700 /data; } || back"
    )
    try:
        out = backend.client.containers.run(
            svc.image,
            entrypoint=["sh", "-c", swap],
            name=promote_copy_name(svc),  # kept: ``copy_done`` reads it
            user="root",
            volumes={
                volume: {"bind": "/data", "mode": "rw"},
                before: {"bind": "/before", "mode": "rw"},
                str(pgdata): {"bind": "/restored", "mode": "ro"},
            },
            stderr=True,
        )
    except Exception as exc:
        try:
            drop_helper(settings)
        except LockBusy as busy:  # never started on a volume still being copied into
            raise ServerError(
                f"copying the restored cluster into volume {volume} failed: {exc}; {busy.message}",
                hint=f"{busy.hint}; the old contents are in volume {before}",
            ) from None
        except Exception:  # the engine's own error is the one raised below
            pass
        c.start()  # the old contents, whole or put back
        raise ServerError(
            f"copying the restored cluster into volume {volume} failed: {exc}",
            hint=f"the old contents are in volume {before}",
        ) from None
    del out
    c.start()
    _wait(backend)
    return volume, before
