"""A major upgrade of the embedded cluster as the server layer sees it: where its pieces
lie under MOVIE_DATA_DIR, and how a killed one goes back to the old cluster.

``db upgrade`` (``core/upgrade/``) writes ``upgrade.json`` before it stops the old
cluster and keeps it up to date; ``db up`` and the next ``db upgrade`` read it. Until
the new cluster has started on files it shares with the old one (``--method link``),
an interrupted upgrade is undone here: the old ``pgdata`` back in place, its
``pg_control`` back from ``pg_control.old``, the half-made new cluster removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moviectl.infra.errors import LockBusy, Refused
from moviectl.infra.files import write_json_atomic
from moviectl.infra.processes import pid_alive
from moviectl.infra.waiting import poll_until

STATE_FILE = "upgrade.json"
WORK_DIR = ".upgrade"  # the new cluster while pg_upgrade makes it; what a rollback discards
# phases: upgrading (old stopped) → transferred (pg_upgrade done) → swapped (new in pgdata)
# → started → done (verified); a --method swap whose old cluster pg_upgrade took apart is
# "broken" until --rollback, "restoring" while that puts the safety backup into a new one
UNDOABLE = ("prepare", "upgrading", "transferred", "swapped")


def old_dir(data_dir: Path, major: int) -> Path:
    return data_dir / f"pgdata.old-{major}"


def read_state(data_dir: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def write_state(data_dir: Path, state: dict[str, Any]) -> None:
    write_json_atomic(data_dir / STATE_FILE, state)


def clear_state(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATE_FILE).unlink()


def other_major(pgdata: Path, data: int, binary: int) -> Refused:
    """``db up`` on data of another major: the upgrade that moves it, or the binaries."""
    how = (
        f"moviectl db upgrade --to {binary} --dry-run, then without --dry-run (with "
        f"MOVIE_PG_BIN_DIR at PostgreSQL {data} binaries)"
        if data < binary
        else f"point MOVIE_PG_BIN_DIR at PostgreSQL {data} binaries (a major never goes back)"
    )
    return Refused(
        f"the data directory {pgdata} was made by PostgreSQL {data}, "
        f"but the server binaries are PostgreSQL {binary}",
        hint=how,
        data_major=data,
        binary_major=binary,
    )


def stop_stray(pgdata: Path, timeout: float = 60) -> None:
    """A postmaster a killed pg_upgrade left running on ``pgdata``: fast shutdown."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return
    if not pid_alive(pid, "postgres"):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if not poll_until(lambda: not pid_alive(pid, "postgres"), timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)


def old_taken_apart(data_dir: Path, state: dict[str, Any]) -> bool:
    """--method swap: pg_upgrade renames the old ``pg_control`` aside right before it moves
    the old cluster's directories into the new one; from then on (and once it has done so)
    the old cluster must never start again."""
    if state.get("method") != "swap":
        return False
    if state.get("phase") not in ("prepare", "upgrading"):
        return True
    control = data_dir / "pgdata" / "global" / "pg_control"
    return not control.exists() and control.with_name("pg_control.old").exists()


def swap_broken(data_dir: Path, state: dict[str, Any]) -> Refused:
    """A swap killed (or failed) while pg_upgrade moved files: neither cluster may start;
    the verified safety backup is the way back, by one command."""
    backup = state.get("backup")
    if state.get("phase") == "restoring":  # --rollback itself was stopped (killed, failed)
        work = data_dir / WORK_DIR
        where = (
            f"what it replaced is kept in {work} (replaced-*)"
            if (work / "replaced-pgdata").exists()
            else f"it had not moved {data_dir / 'pgdata'} yet"
        )
        return Refused(
            f"the --rollback of the upgrade to PostgreSQL {state.get('to')} stopped while "
            f"it restored the safety backup {backup}: {where}, and nothing was started",
            hint="moviectl db upgrade --rollback --yes runs it again (every write since "
            "that backup is lost)",
            backup=backup,
        )
    return Refused(
        f"the upgrade to PostgreSQL {state.get('to')} with --method swap stopped while "
        f"pg_upgrade moved the old cluster's files into the new one: neither cluster in "
        f"{data_dir} can start safely, and nothing was started",
        hint=f"moviectl db upgrade --rollback --yes restores the safety backup {backup} "
        f"into a new PostgreSQL {state.get('from')} cluster (every write since that "
        "backup is lost)",
        backup=backup,
    )


def pending(data_dir: Path) -> tuple[str, str] | None:
    """For `doctor`: (what, the way on) while an upgrade is recorded here, else None."""
    state = read_state(data_dir)
    if state is None:
        return None
    to, phase, pid = state.get("to"), state.get("phase"), int(state.get("pid") or 0)
    if phase == "done":
        kept = old_dir(data_dir, int(state["from"]))
        return (
            f"the upgrade to PostgreSQL {to} awaits --finish: the old cluster is kept in {kept}",
            "moviectl db upgrade --finish --yes (keep it) or --rollback --yes",
        )
    if pid and pid_alive(pid) and phase != "broken":
        return f"an upgrade to PostgreSQL {to} is running (pid {pid}, phase {phase})", ""
    if phase in ("broken", "restoring") or (
        phase in ("prepare", "upgrading") and old_taken_apart(data_dir, state)
    ):
        refused = swap_broken(data_dir, state)
        return refused.message, refused.hint or ""
    return (
        f"an upgrade to PostgreSQL {to} was interrupted (phase {phase})",
        "moviectl db up puts the old cluster back",
    )


def refuse_if_running(data_dir: Path) -> None:
    """Exit 7 while another process upgrades this cluster (it holds the cluster's lock for
    minutes: a second `db upgrade`, `db up` or `db down` is told so instead of waiting)."""
    state = read_state(data_dir)
    busy = state and state.get("phase") not in ("done", "broken")
    pid = int(state.get("pid") or 0) if state and busy else 0
    if pid and pid != os.getpid() and pid_alive(pid):
        raise LockBusy(
            f"an upgrade of the cluster in {data_dir} is running (pid {pid}, phase "
            f"{state.get('phase') if state else '?'})",
            hint="wait for `moviectl db upgrade` to finish",
        )


@contextlib.contextmanager
def closing_lock(data_dir: Path) -> Iterator[None]:
    """One `db upgrade --finish` or `--rollback` at a time: a flock on MOVIE_DATA_DIR itself
    (nothing written, so a full disk, where a rollback must still run, cannot stop it),
    taken at once or exit 7 naming the holder's pid: a swap's rollback restores a backup for
    minutes, and a second one used to wait on the cluster's lock saying nothing, only to
    find nothing left to do. An upgrade still running is refused the same way."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _flock_holder(data_dir)
            raise LockBusy(
                f"a `db upgrade {_flag_of(pid)}` of the cluster in {data_dir} is running "
                f"(pid {pid or '?'}); nothing done",
                hint="wait for it to end; `moviectl doctor` then says where the upgrade is",
            ) from None
        refuse_if_running(data_dir)
        yield
    finally:
        os.close(fd)  # the flock goes with it


def _flock_holder(path: Path) -> int:
    """The pid holding a flock on ``path`` (Linux's /proc/locks), 0 when not found."""
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    with contextlib.suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            f = line.split()
            if len(f) > 5 and f[1] == "FLOCK" and f[5] == dev and f[4].isdigit():
                return int(f[4])
    return 0


def _flag_of(pid: int) -> str:
    with contextlib.suppress(OSError):
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for flag in ("--rollback", "--finish"):
            if flag.encode() in args:
                return flag
    return "--finish/--rollback"


def recover_interrupted(data_dir: Path) -> str | None:
    """Undo an upgrade that was killed before it was done; what was done, or None.

    Refused while the upgrade's process lives (exit 7); after a link upgrade whose new
    server has started, the old cluster cannot come back: the new one stays (exit 5
    only from ``--rollback``). A swap is rolled forward once pg_upgrade has finished and
    refused (exit 5, naming the safety backup and ``--rollback``) while it was moving files.
    """
    state = read_state(data_dir)
    if state is None or state.get("phase") == "done":
        return None
    refuse_if_running(data_dir)
    pgdata, old = data_dir / "pgdata", old_dir(data_dir, int(state["from"]))
    work = data_dir / WORK_DIR
    for d in (pgdata, old, work / "pgdata"):
        stop_stray(d)
    if old_taken_apart(data_dir, state):
        return _swap_forward(data_dir, state, old, work)
    if state.get("phase") not in UNDOABLE and state.get("method") == "link":
        state["phase"] = "done"
        state["note"] = "interrupted after the new server started: not verified"
        write_state(data_dir, state)
        return "an interrupted link upgrade had started the new server: it stays"
    work.mkdir(exist_ok=True)
    if old.exists():
        if pgdata.exists():  # the new cluster was swapped in: out again
            os.rename(pgdata, work / f"discarded-{os.getpid()}")
        os.rename(old, pgdata)
    control = pgdata / "global" / "pg_control"
    if not control.exists() and control.with_name("pg_control.old").exists():
        os.rename(control.with_name("pg_control.old"), control)  # link mode, never started
    shutil.rmtree(work, ignore_errors=True)
    clear_state(data_dir)
    return f"an interrupted upgrade to PostgreSQL {state.get('to')} was undone: {pgdata} is back"


def _swap_forward(data_dir: Path, state: dict[str, Any], old: Path, work: Path) -> str:
    """The old cluster is gone: a complete new one (pg_upgrade exited 0) goes into place
    unverified, as after a link upgrade; a half-moved one is refused with the way back."""
    pgdata, phase = data_dir / "pgdata", state.get("phase")
    if phase not in ("transferred", "swapped", "started"):
        if phase != "restoring":
            state["phase"] = "broken"
            write_state(data_dir, state)
        raise swap_broken(data_dir, state)
    if phase == "transferred" and (work / "pgdata").exists():
        if pgdata.exists() and not old.exists():
            os.rename(pgdata, old)
        os.rename(work / "pgdata", pgdata)
    state["phase"] = "done"
    state["note"] = "interrupted after pg_upgrade --swap completed: not verified"
    write_state(data_dir, state)
    return (
        f"an interrupted swap upgrade to PostgreSQL {state.get('to')} had completed "
        "pg_upgrade: the new cluster stays (not verified; --finish keeps it, --rollback "
        "restores the safety backup)"
    )
