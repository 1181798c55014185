"""A major upgrade of the Docker backend's data volume as the server layer sees it: where
its pieces lie, and how a killed one goes back to the old volume.

The live data stays in the compose file's volume (``<project>_pgdata``), so Compose by hand
keeps finding it. ``db upgrade`` (``core/upgrade/docker.py``) copies it to
``<volume>-old-<major>`` first (kept until ``--finish``), then empties the live volume and
restores the safety backup into a container of the new image on it. Its progress is in
``MOVIE_DATA_DIR/docker-upgrade-<project>.json``; while it runs it holds
``.docker-<project>.upgrade.lock`` (a second copy, `db up` included, is refused: exit 7).
An upgrade killed before it was verified is undone here, before `db up` starts anything:
the live volume emptied and refilled from the old copy (which is complete once the state
says so), the old copy removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moviectl.infra.errors import CheckFailed, LockBusy, Refused
from moviectl.infra.files import write_json_atomic

# phases: prepare (nothing changed) → copying (old container stopped, the copy being made)
# → replacing (the copy is complete; the live volume is emptied and refilled by the new
# major) → done (verified; awaits --finish or --rollback); rolling_back (as replacing)
UNDOABLE = ("prepare", "copying", "replacing", "rolling_back")
HELPER_LABEL = "io.moviectl.upgrade-helper"


def state_path(data_dir: Path, project: str) -> Path:
    return Path(data_dir) / f"docker-upgrade-{project}.json"


def recorded_projects(data_dir: Path) -> list[str]:
    """The compose projects with an upgrade state in ``data_dir`` (by ``state_path``)."""
    head, tail = state_path(data_dir, "*").name.split("*")
    found = sorted(Path(data_dir).glob(f"{head}*{tail}"))
    return [f.name[len(head) : len(f.name) - len(tail)] for f in found]


def old_volume(volume: str, major: int) -> str:
    return f"{volume}-old-{major}"


def helper_name(project: str) -> str:
    return f"{project}-upgrade-helper"


def read_state(data_dir: Path, project: str) -> dict[str, Any] | None:
    """The upgrade's state, None when there is none; a file that is not one moviectl
    wrote (it is written atomically) is refused: it says which volume holds the old data."""
    path = state_path(data_dir, project)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or not isinstance(doc.get("phase"), str):
        raise Refused(
            f"{path} is not an upgrade state moviectl wrote; it names the volume that holds "
            "the old data, so nothing was done",
            hint=f"check `docker volume ls --filter name={project}`, then move the file away",
        )
    return doc


def write_state(data_dir: Path, project: str, state: dict[str, Any]) -> None:
    # the one atomic writer: the rename made durable too (the phase says which volume
    # holds the old data, so a crash must never bring back the previous phase)
    write_json_atomic(state_path(data_dir, project), state)


def clear_state(data_dir: Path, project: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        state_path(data_dir, project).unlink()


@contextlib.contextmanager
def upgrade_lock(data_dir: Path, project: str) -> Iterator[None]:
    """Held for a whole upgrade, --rollback or recovery; taken at once or exit 7."""
    d = Path(data_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f".docker-{project}.upgrade.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            state = read_state(d, project) or {}
            raise LockBusy(
                f"an upgrade of the Docker project {project} is running "
                f"(pid {state.get('pid', '?')}, phase {state.get('phase', '?')})",
                hint="wait for `moviectl db upgrade` to finish",
            ) from None
        yield


def run_helper(client: Any, image: str, project: str, script: str, volumes: dict[str, str]) -> None:
    """``script`` in a throwaway container of ``image`` (root, no network) with ``volumes``
    (name → mount point); a non-zero exit is an error naming its last output line. Named,
    so that one a killed moviectl left behind is found and removed before anything else."""
    remove_helper(client, project)
    c = client.containers.run(
        image,
        entrypoint=["sh", "-c", script],
        volumes={v: {"bind": m, "mode": "rw"} for v, m in volumes.items()},
        network_disabled=True,
        detach=True,
        user="0",
        name=helper_name(project),
        labels={HELPER_LABEL: project},
    )
    try:
        code = int(c.wait(timeout=3600).get("StatusCode", 1))
        if code != 0:
            lines = c.logs().decode(errors="replace").strip().splitlines()
            raise CheckFailed(
                f"{script.split()[0]} in a container of {image} failed (exit {code}): "
                + (lines[-1] if lines else "no output"),
                hint="is the disk full? `docker system df` says what Docker holds",
            )
    finally:
        with contextlib.suppress(Exception):
            c.remove(force=True)


def remove_helper(client: Any, project: str) -> None:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        client.containers.get(helper_name(project)).remove(force=True)


def copy_volume(client: Any, image: str, project: str, src: str, dst: str) -> None:
    """Everything in ``src`` into ``dst`` (emptied first), owners and modes kept."""
    script = "find /to -mindepth 1 -delete && cp -a /from/. /to/ && sync"
    run_helper(client, image, project, script, {src: "/from", dst: "/to"})


def empty_volume(client: Any, image: str, project: str, volume: str) -> None:
    run_helper(client, image, project, "find /v -mindepth 1 -delete && sync", {volume: "/v"})


def remove_volume(client: Any, name: str) -> None:
    from docker.errors import NotFound

    with contextlib.suppress(NotFound):
        client.volumes.get(name).remove(force=True)


def _db_containers(client: Any, project: str) -> list[Any]:
    labels = [f"com.docker.compose.project={project}", "com.docker.compose.service=db"]
    return list(client.containers.list(ignore_removed=True, all=True, filters={"label": labels}))


def remove_containers(client: Any, project: str) -> None:
    """The project's db container (whichever image it runs): the upgrade made it anew."""
    for c in _db_containers(client, project):
        c.remove(force=True)


def undo(client: Any, state: dict[str, Any]) -> str:
    """The live volume back to the old data and the old copy removed (idempotent: a kill
    during the undo is undone again by the next one)."""
    project, volume, image = state["project"], state["volume"], state["old_image"]
    remove_helper(client, project)
    kept = old_volume(volume, int(state["from"]))
    if state.get("phase") in ("replacing", "rolling_back"):
        remove_containers(client, project)  # the new major's container, or a half-made one
        copy_volume(client, image, project, kept, volume)
    elif state.get("phase") == "copying":
        # the killed run's `docker stop` of the old container may still be under way in the
        # engine: wait for it here, or it stops the container `db up` is about to start
        for c in _db_containers(client, project):
            c.stop(timeout=30)
    remove_volume(client, kept)
    return (
        f"an interrupted upgrade to PostgreSQL {state.get('to')} was undone: volume {volume} "
        f"holds the PostgreSQL {state.get('from')} data again (image {image})"
    )


def recover_interrupted(client: Any, data_dir: Path, project: str) -> str | None:
    """Before `db up`: an upgrade killed before it was verified, undone; what was done."""
    state = read_state(data_dir, project)
    if state is None or int(state.get("pid") or 0) == os.getpid():
        return None  # nothing recorded, or this very process upgrades (it calls `up`)
    with upgrade_lock(data_dir, project):  # refused while that upgrade still runs
        state = read_state(data_dir, project)
        if state is None or state.get("phase") not in UNDOABLE:
            return None
        done = undo(client, state)
        clear_state(data_dir, project)
        return done


def pending(data_dir: Path) -> tuple[str, str] | None:
    """For `doctor`: (what, the way on) while a Docker upgrade is recorded, else None."""
    from moviectl.infra.processes import pid_alive

    found = recorded_projects(data_dir)
    if not found:
        return None
    state = read_state(data_dir, found[0])
    if state is None:
        return None
    to, phase, pid = state.get("to"), state.get("phase"), int(state.get("pid") or 0)
    if phase == "done":
        kept = old_volume(str(state.get("volume")), int(state.get("from") or 0))
        return (
            f"the upgrade to PostgreSQL {to} awaits --finish: old data kept in volume {kept}",
            "moviectl db upgrade --finish --yes (keep it) or --rollback --yes",
        )
    if pid and pid_alive(pid):
        return f"an upgrade to PostgreSQL {to} is running (pid {pid}, phase {phase})", ""
    return (
        f"an upgrade to PostgreSQL {to} was interrupted (phase {phase})",
        "moviectl db up puts the old data back",
    )


def leftover_dry_runs(client: Any, project: str) -> list[str]:
    """Projects of dry runs whose process is gone (a killed dry run's container/volume)."""
    from moviectl.infra.processes import pid_alive

    pat = re.compile(rf"^{re.escape(project)}-upgdry(\d+)")
    names = [c.name for c in client.containers.list(ignore_removed=True, all=True)]
    names += [v.name for v in client.volumes.list()]
    found = set()
    for name in names:
        m = pat.match(name)
        if m and not pid_alive(int(m.group(1))):
            found.add(f"{project}-upgdry{m.group(1)}")
    return sorted(found)
