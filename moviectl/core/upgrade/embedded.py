"""`moviectl db upgrade` of the embedded cluster: the real upgrade, ``--finish`` and
``--rollback``.

Under MOVIE_DATA_DIR: ``pgdata`` (the live cluster), ``.upgrade/`` (the new cluster while
it is made), ``pgdata.old-<major>`` (the old cluster, kept until ``--finish``) and
``upgrade.json`` (where the upgrade is: ``core/servers/upgrade_state.py`` undoes a killed
one before ``db up`` starts anything).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.servers import swap_journal
from moviectl.core.servers.embedded import embedded_server
from moviectl.core.servers.upgrade_state import (
    WORK_DIR,
    clear_state,
    closing_lock,
    old_dir,
    old_taken_apart,
    read_state,
    recover_interrupted,
    refuse_if_running,
    stop_stray,
    swap_broken,
    write_state,
)
from moviectl.core.upgrade.binaries import server_bin_dir
from moviectl.core.upgrade.docker_steps import database_mark, refuse_writers
from moviectl.core.upgrade.model import (
    METHODS,
    ROLLBACK,
    FinishResult,
    Progress,
    Timer,
    UpgradeResult,
)
from moviectl.core.upgrade.pgupgrade import analyzing
from moviectl.core.upgrade.steps import (
    check_direction,
    check_swap,
    preflight,
    remove_tree,
    server_like,
    transfer,
)
from moviectl.core.upgrade.verify import load_in_background, safety_backup, verify_after
from moviectl.infra.errors import MoviectlError, Refused, UsageError
from moviectl.infra.pgtools import wheel_bin_dir
from moviectl.infra.ports import free_port

if TYPE_CHECKING:
    from moviectl.core.servers.cluster import EmbeddedServer
    from moviectl.infra.settings import Settings


def upgrade(
    settings: Settings,
    to: int,
    method: str = "copy",
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> UpgradeResult:
    if method not in METHODS:
        raise UsageError(f"unknown --method {method!r}", hint=", ".join(METHODS))
    check_swap(method, to)
    server = embedded_server(settings)
    timer = Timer(progress)
    refuse_if_running(server.data_dir)  # a second copy: exit 7 now, not a wait on the lock
    with server.lock():
        swap_journal.refuse_if_interrupted(server.data_dir)  # a killed `pitr promote` first
        if not dry_run:
            undone = recover_interrupted(server.data_dir)
            if undone:
                timer.progress(undone)
        state = read_state(server.data_dir)
        if state and state.get("phase") != "done" and old_taken_apart(server.data_dir, state):
            raise swap_broken(server.data_dir, state)  # the dry run's look at a killed swap
        if state is not None:
            raise Refused(
                f"an upgrade to PostgreSQL {state.get('to')} is "
                + ("done but not finished" if state.get("phase") == "done" else "interrupted")
                + f": the old cluster is kept in {old_dir(server.data_dir, int(state['from']))}",
                hint="moviectl db upgrade --finish --yes (keep the new one) or --rollback --yes"
                if state.get("phase") == "done"
                else "moviectl db up undoes it",
            )
        from_major = server.data_major()
        if from_major is None:
            raise UsageError(
                f"no embedded cluster in {server.pgdata}: nothing to upgrade",
                hint="moviectl db up makes one (of the binaries' own major)",
            )
        check_direction(from_major, to)
        if to == from_major:
            return UpgradeResult(
                from_major, to, method, dry_run, None, next_steps=["nothing to do"]
            )
        old_bin = server_bin_dir(settings, from_major, "old")
        new_bin = server_bin_dir(settings, to, "new")
        timer.progress(f"--method {method}: --rollback is {ROLLBACK[method]}")
        if not dry_run:
            return _upgrade(settings, server, old_bin, new_bin, from_major, to, method, timer)
    # the dry run only reads the live cluster: `db up` and `db down` need not wait for it
    from moviectl.core.upgrade.dryrun import dry_run as run_dry

    return run_dry(settings, server, old_bin, new_bin, from_major, to, method, timer)


def _upgrade(
    settings: Settings,
    server: EmbeddedServer,
    old_bin: Path,
    new_bin: Path,
    from_major: int,
    to: int,
    method: str,
    timer: Timer,
) -> UpgradeResult:
    data_dir = server.data_dir
    old = server_like(server, data_dir, old_bin)
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "from": from_major,
        "to": to,
        "method": method,
        "phase": "prepare",  # from here a second copy is refused (exit 7)
        "backup": None,
        "old_bin": str(old_bin),
        "new_bin": str(new_bin),
        "started_at": time.time(),
    }
    write_state(data_dir, state)

    def record(path: str) -> None:  # the safety backup, named in the state as soon as made
        state["backup"] = path
        write_state(data_dir, state)

    work = data_dir / WORK_DIR
    new = server_like(server, work, new_bin, port=free_port())
    try:
        with timer.phase("start_old", f"starting the PostgreSQL {from_major} cluster"):
            old.start()
        made = safety_backup(settings, timer, record)
        facts, traps = preflight(settings, new_bin, to, timer)
        if method == "swap":  # its only way back is the safety backup: nothing newer
            refuse_writers(settings, made.manifest)
            state["mark"] = database_mark(settings)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        state["phase"] = "upgrading"
        write_state(data_dir, state)
        loading = load_in_background()  # the verification's imports beside pg_upgrade
        # pg_upgrade's own checks run first, before it touches the old cluster: the
        # separate --check is the dry run's (it would start both servers once more)
        transfer(old, new, method, facts, to, timer, check_first=False)
        state["phase"] = "transferred"  # swap: from here on the new cluster is the one
        write_state(data_dir, state)
        with timer.phase("swap", f"the new cluster into {server.pgdata}"):
            os.rename(server.pgdata, old_dir(data_dir, from_major))
            os.rename(new.pgdata, server.pgdata)
            state["phase"] = "swapped"
            write_state(data_dir, state)
    except BaseException as exc:
        if not old_taken_apart(data_dir, state):
            recover_interrupted(data_dir)  # the old cluster back, as a kill -9 would get it
            old.start()
            raise
        if state["phase"] not in ("prepare", "upgrading"):  # pg_upgrade --swap completed
            recover_interrupted(data_dir)  # the new cluster into place, unverified
            raise
        state["phase"] = "broken"  # pg_upgrade --swap failed mid-way: neither may start
        write_state(data_dir, state)
        for d in (server.pgdata, new.pgdata):
            stop_stray(d)  # whatever pg_upgrade left running
        refused = swap_broken(data_dir, state)
        if not isinstance(exc, MoviectlError):  # Ctrl-C, SIGTERM: their exit, the way back
            exc.add_note(f"{refused.message}: {refused.hint}")
            raise
        refused.message = f"{exc.message}; {refused.message}"
        raise refused from exc
    live = server_like(server, data_dir, new_bin)
    live.write_marker(live.pgdata)
    state["phase"] = "started"  # link: from here on the old cluster cannot come back
    write_state(data_dir, state)
    with timer.phase("start_new", f"starting PostgreSQL {to}"):
        live.start()
    result = UpgradeResult(from_major, to, method, False, made.path, traps=traps)
    says = "verifying against the safety backup's manifest; statistics meanwhile"
    with timer.phase("verify", says), analyzing(live, to) as analyzed:
        loading.join()
        held, failed = verify_after(settings, made.manifest)
    result.verification += analyzed
    result.verification += held
    result.failures += failed
    state["phase"] = "done"
    write_state(data_dir, state)
    result.phases, result.seconds = timer.phases, timer.total()
    result.old_cluster = str(old_dir(data_dir, from_major))
    result.rollback = ROLLBACK[method]
    result.next_steps = _next_steps(settings, new_bin, method, result.old_cluster)
    return result


def _next_steps(settings: Settings, new_bin: Path, method: str, kept: str) -> list[str]:
    steps = []
    if settings.pg_bin_dir is not None and settings.pg_bin_dir != new_bin:
        steps.append(
            "unset MOVIE_PG_BIN_DIR (the new major is the embedded wheel's)"
            if new_bin == wheel_bin_dir()
            else f"set MOVIE_PG_BIN_DIR={new_bin}"
        )
    steps.append(f"moviectl db upgrade --finish --yes deletes the old cluster in {kept}")
    if method == "swap":
        steps.append(
            "moviectl db upgrade --rollback --yes restores the safety backup into a new "
            "cluster of the old major (the only way back: --swap took the old one apart)"
        )
    elif method != "link":
        steps.append("moviectl db upgrade --rollback --yes brings it back until then")
    return steps


def finish(settings: Settings) -> FinishResult:
    """Keep the new cluster: the old one (and the upgrade's leftovers) deleted."""
    server = embedded_server(settings)
    with closing_lock(server.data_dir), server.lock():
        state = _state_or_refuse(server.data_dir, "--finish")
        if state.get("phase") != "done":
            if old_taken_apart(server.data_dir, state):
                raise swap_broken(server.data_dir, state)
            raise Refused(
                f"the upgrade to PostgreSQL {state.get('to')} did not complete "
                f"(stopped in phase {state.get('phase')})",
                hint="`moviectl db up` undoes it; then run the upgrade again",
            )
        kept = old_dir(server.data_dir, int(state["from"]))
        remove_tree(kept)
        shutil.rmtree(server.data_dir / WORK_DIR, ignore_errors=True)
        clear_state(server.data_dir)
    return FinishResult(
        "finish", int(state["from"]), int(state["to"]), str(kept), "the new cluster stays"
    )


def rollback(settings: Settings) -> FinishResult:
    """The old cluster back in place and started; the new one (and what was written to it
    since the upgrade) discarded. Refused after a link upgrade started the new server."""
    server = embedded_server(settings)
    with closing_lock(server.data_dir), server.lock():
        state = _state_or_refuse(server.data_dir, "--rollback")
        from_major, to = int(state["from"]), int(state["to"])
        if old_taken_apart(server.data_dir, state):
            from moviectl.core.upgrade.swap_rollback import restore_safety_backup

            return restore_safety_backup(settings, server, state)
        if state.get("method") == "link" and state.get("phase") in ("started", "done"):
            raise Refused(
                f"cannot roll back: --method link and PostgreSQL {to} has started on the "
                "data files it shares with the old cluster",
                hint=f"restore the safety backup {state.get('backup')} into a PostgreSQL "
                f"{from_major} cluster (moviectl restore), or keep the new one (--finish)",
            )
        new = server_like(server, server.data_dir, Path(state["new_bin"]))
        new.stop("fast")
        state["phase"] = "upgrading"  # what recovery undoes: the same steps as after a kill
        write_state(server.data_dir, state)
        recover_interrupted(server.data_dir)
        old = server_like(server, server.data_dir, Path(state["old_bin"]))
        old.start()
    return FinishResult(
        "rollback",
        from_major,
        to,
        f"the PostgreSQL {to} cluster",
        f"PostgreSQL {from_major} is back in {server.pgdata} and running; `moviectl db up` "
        f"needs MOVIE_PG_BIN_DIR={state['old_bin']}",
    )


def rolls_back_by_backup(settings: Settings) -> bool:
    """Whether --rollback would restore the safety backup (a swap took the old apart)."""
    data_dir = embedded_server(settings).data_dir
    state = read_state(data_dir)
    return state is not None and old_taken_apart(data_dir, state)


def _state_or_refuse(data_dir: Path, flag: str) -> dict[str, Any]:
    state = read_state(data_dir)
    if state is None:
        raise UsageError(
            f"no upgrade awaits {flag} in {data_dir}",
            hint="moviectl db upgrade --to MAJOR starts one",
        )
    return state
