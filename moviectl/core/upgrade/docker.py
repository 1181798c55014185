"""`moviectl db upgrade` of the Docker backend: old image → new image by dump and restore
(no image holds two majors' binaries, which pg_upgrade needs).

The safety backup is the dump: taken from the old container and verified by its restore
drill, then restored into a container of the new image on the compose file's own volume,
whose old contents are copied aside first (``<volume>-old-<major>``, kept until
``--finish``; ``--rollback`` copies them back). Where it is and how a killed one is undone:
``core/servers/docker_upgrade.py``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.servers.docker import DockerBackend
from moviectl.core.servers.docker_upgrade import (
    clear_state,
    copy_volume,
    empty_volume,
    old_volume,
    read_state,
    remove_containers,
    remove_volume,
    undo,
    upgrade_lock,
    write_state,
)
from moviectl.core.servers.volume_layout import image_major, read_layout
from moviectl.core.upgrade.docker_steps import (
    ROLLBACK,
    analyze_in,
    carry_globals,
    database_mark,
    dump_globals,
    refuse_writers,
    restore_into,
)
from moviectl.core.upgrade.model import FinishResult, Progress, Timer, UpgradeResult
from moviectl.core.upgrade.steps import check_direction
from moviectl.core.upgrade.verify import safety_backup, verify_after
from moviectl.infra.errors import Refused, ToolMissing, UsageError

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings


def check_method(method: str) -> None:
    if method != "dump":
        raise UsageError(
            f"--method {method} needs both majors' binaries on one machine, and no Docker "
            "image holds two: the Docker backend upgrades by --method dump (the default)",
            hint="moviectl db upgrade --to MAJOR (--method dump)",
        )


def upgrade(
    settings: Settings,
    to: int,
    method: str = "dump",
    *,
    image: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> UpgradeResult:
    check_method(method)
    backend = DockerBackend(settings)
    project, volume = backend.svc.project, backend.svc.volume_name
    if not volume:
        raise UsageError(
            "the compose file's db service keeps its data in no named volume: nothing to "
            "upgrade in place",
            hint="moviectl backup, then moviectl restore into a server of the new major",
        )
    timer = Timer(progress)
    data_dir = Path(settings.data_dir)
    with upgrade_lock(data_dir, project):  # a second copy: exit 7 at once
        state = read_state(data_dir, project)
        if state is not None and state.get("phase") == "done":
            raise Refused(
                f"the upgrade to PostgreSQL {state.get('to')} is done but not finished: the "
                f"old data is kept in volume {old_volume(volume, int(state['from']))}",
                hint="moviectl db upgrade --finish --yes (keep the new one) or --rollback --yes",
            )
        if not dry_run:
            _refuse_while_promoting(data_dir)
        if state is not None:  # killed: back to the old volume first, as `db up` would
            timer.progress(undo(backend.client, state))
            clear_state(data_dir, project)
        old_image, from_major = _old_image(backend, volume)
        check_direction(from_major, to)
        new_image = _new_image(backend, settings, old_image, to, image)
        if to == from_major:
            return UpgradeResult(from_major, to, "dump", dry_run, None, next_steps=["nothing"])
        if dry_run:
            from moviectl.core.upgrade.docker_dryrun import dry_run as run_dry

            return run_dry(settings, backend, old_image, new_image, from_major, to, timer)
        return _upgrade(settings, backend, old_image, new_image, from_major, to, timer)


def _refuse_while_promoting(data_dir: Path) -> None:
    """A journaled `pitr promote` not yet finished copies its restored cluster (the old
    major) into the volume when run again: it would undo an upgrade made in between."""
    from moviectl.core.servers import swap_journal

    j = swap_journal.read(data_dir)
    if j is not None:
        raise Refused(
            f"a `pitr promote {j['name']}` (pid {j.get('pid')}) has not finished; "
            "nothing was upgraded",
            hint=f"finish it first: moviectl pitr promote {j['name']} --yes",
        )


def _old_image(backend: DockerBackend, volume: str) -> tuple[str, int]:
    """The image the data was made with (the container's, else a local one of its major)."""
    client = backend.client
    c = backend.container()
    image = str(c.attrs["Config"]["Image"]) if c is not None else backend.svc.image
    found = read_layout(client, volume, image if _local(client, image) else _any_image(client))
    if found.major is None:
        raise UsageError(
            f"volume {volume} holds no cluster yet: nothing to upgrade",
            hint="moviectl db up makes one with MOVIE_DB_IMAGE",
        )
    if image_major(image) == found.major and _local(client, image):
        return image, found.major
    for img in client.images.list():
        for tag in img.tags:
            if image_major(tag) == found.major and tag.rsplit("/", 1)[-1].startswith("postgres"):
                return str(tag), found.major
    raise ToolMissing(
        f"volume {volume} holds PostgreSQL {found.major} data and no PostgreSQL "
        f"{found.major} image is here to read it: docker pull postgres:{found.major} (or "
        "build one)",
        hint="the dump is taken by a container of the data's own major",
    )


def _any_image(client: Any) -> str:
    for img in client.images.list():
        if img.tags:
            return str(img.tags[0])
    raise ToolMissing("no image on this Docker engine", hint="docker pull postgres:16")


def _new_image(
    backend: DockerBackend, settings: Settings, old: str, to: int, image: str | None
) -> str:
    """--image, else MOVIE_DB_IMAGE when it names the new major, else the old tag's major
    replaced (``postgres:16-alpine`` → ``postgres:17-alpine``)."""
    if image is None:
        if image_major(settings.db_image) == to:
            image = settings.db_image
        else:
            repo, _, tag = old.rpartition(":")
            image = f"{repo}:{to}{tag.lstrip('0123456789')}"
    if image_major(image) != to:
        raise UsageError(
            f"the image {image} does not name PostgreSQL {to} in its tag",
            hint=f"--image postgres:{to} (a tag that starts with the major)",
        )
    if not _local(backend.client, image):
        raise ToolMissing(
            f"the image {image} (PostgreSQL {to}) is not available locally: docker pull "
            f"{image}, or build it (or name another with --image)",
            hint="nothing was changed",
        )
    return image


def _local(client: Any, image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
        return True
    except ImageNotFound:
        return False


def _upgrade(
    settings: Settings,
    backend: DockerBackend,
    old_image: str,
    new_image: str,
    from_major: int,
    to: int,
    timer: Timer,
) -> UpgradeResult:
    client, project = backend.client, backend.svc.project
    volume = str(backend.svc.volume_name)
    kept = old_volume(volume, from_major)
    data_dir = Path(settings.data_dir)
    old_settings = settings.but(db_image=old_image)
    new_settings = settings.but(db_image=new_image)
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "project": project,
        "volume": volume,
        "from": from_major,
        "to": to,
        "old_image": old_image,
        "new_image": new_image,
        "phase": "prepare",
        "backup": None,
        "started_at": time.time(),
    }
    write_state(data_dir, project, state)

    def record(path: str) -> None:  # the safety backup, named in the state as soon as made
        state["backup"] = path
        write_state(data_dir, project, state)

    try:
        with timer.phase("start_old", f"the PostgreSQL {from_major} container ({old_image})"):
            DockerBackend(old_settings).up(timeout=120)
        made = safety_backup(settings, timer, record)
        with timer.phase("checks", "no writes since the backup; the roles and the mark"):
            refuse_writers(settings, made.manifest)
            mark = database_mark(settings)
            roles = dump_globals(backend.container(), settings)
        state["phase"] = "copying"
        write_state(data_dir, project, state)
        with timer.phase("copy_old", f"volume {volume} copied to {kept} (kept until --finish)"):
            c = backend.container()
            if c is not None:
                c.stop(timeout=30)
            client.volumes.create(kept, labels={"io.moviectl.upgrade-old": project})
            copy_volume(client, old_image, project, volume, kept)
        state["phase"] = "replacing"
        write_state(data_dir, project, state)
        with timer.phase("initdb", f"a PostgreSQL {to} container ({new_image}) on {volume}"):
            remove_containers(client, project)
            empty_volume(client, old_image, project, volume)
            DockerBackend(new_settings).up(timeout=120)
        with timer.phase("restore", f"restoring the safety backup into PostgreSQL {to}"):
            carry_globals(new_settings, roles)
            restore_into(new_settings, Path(made.path), made.manifest, mark)
    except BaseException:
        undo(client, state)  # the old data back, as after a kill -9; then running again
        clear_state(data_dir, project)
        DockerBackend(old_settings).up(timeout=120)
        raise
    result = UpgradeResult(from_major, to, "dump", False, made.path)
    with timer.phase("verify", "verifying against the safety backup's manifest; ANALYZE"):
        held, failed = verify_after(new_settings, made.manifest)
        result.verification += [analyze_in(DockerBackend(new_settings).container(), settings)]
    result.verification += held
    result.failures += failed
    state["phase"] = "done"
    write_state(data_dir, project, state)
    result.phases, result.seconds = timer.phases, timer.total()
    result.old_cluster = f"volume {kept} (image {old_image})"
    result.rollback = ROLLBACK
    result.next_steps = [
        f"set MOVIE_DB_IMAGE={new_image} (in .env or the environment): the db container runs it"
        + (" (it is set)" if settings.db_image == new_image else ""),
        f"moviectl db upgrade --finish --yes deletes the old data (volume {kept})",
        f"moviectl db upgrade --rollback --yes brings PostgreSQL {from_major} back until then",
    ]
    return result


def _pending(settings: Settings, flag: str) -> tuple[DockerBackend, dict[str, Any]]:
    backend = DockerBackend(settings)
    state = read_state(Path(settings.data_dir), backend.svc.project)
    if state is None:
        raise UsageError(
            f"no upgrade of the Docker project {backend.svc.project} awaits {flag}",
            hint="moviectl db upgrade --to MAJOR starts one",
        )
    return backend, state


def finish(settings: Settings) -> FinishResult:
    """Keep the new major: the old data's volume deleted."""
    backend, _ = _pending(settings, "--finish")
    project, data_dir = backend.svc.project, Path(settings.data_dir)
    with upgrade_lock(data_dir, project):
        _, state = _pending(settings, "--finish")
        if state.get("phase") != "done":
            raise Refused(
                f"the upgrade to PostgreSQL {state.get('to')} did not complete "
                f"(stopped in phase {state.get('phase')})",
                hint="`moviectl db up` undoes it; then run the upgrade again",
            )
        kept = old_volume(str(state["volume"]), int(state["from"]))
        remove_volume(backend.client, kept)
        clear_state(data_dir, project)
    return FinishResult(
        "finish",
        int(state["from"]),
        int(state["to"]),
        f"volume {kept}",
        f"volume {state['volume']} holds PostgreSQL {state['to']}; MOVIE_DB_IMAGE="
        f"{state['new_image']} starts it",
    )


def rollback(settings: Settings) -> FinishResult:
    """The old data back in the live volume under a container of the old image; the new
    major's data (and what was written to it since the upgrade) discarded."""
    backend, _ = _pending(settings, "--rollback")
    project, data_dir = backend.svc.project, Path(settings.data_dir)
    with upgrade_lock(data_dir, project):
        _, state = _pending(settings, "--rollback")
        state["pid"] = os.getpid()
        state["phase"] = "rolling_back"  # a kill from here: `db up` finishes the rollback
        write_state(data_dir, project, state)
        undo(backend.client, state)
        clear_state(data_dir, project)
        old_image = str(state["old_image"])
        DockerBackend(settings.but(db_image=old_image)).up(timeout=120)
    return FinishResult(
        "rollback",
        int(state["from"]),
        int(state["to"]),
        f"the PostgreSQL {state['to']} data in volume {state['volume']}",
        f"PostgreSQL {state['from']} is back in volume {state['volume']} and running; set "
        f"MOVIE_DB_IMAGE={old_image} (`moviectl db up` refuses the new image on it)",
    )
