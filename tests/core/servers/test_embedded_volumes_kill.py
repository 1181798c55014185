"""`db down --volumes` (embedded backend) killed with -9 at several moments, or run twice at
once: it leaves the intact cluster or a `.deleting-<pid>` the next run removes, never a
half-deleted cluster where `db up` looks."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import Cli, dead_pid, subprocess_env, wait_for


def _data(cli: Cli) -> Path:
    return Path(cli.env["MOVIE_DATA_DIR"])


def _trash(cli: Cli) -> list[Path]:
    return sorted(_data(cli).glob(".deleting-*"))


def _ballast(cli: Cli, n: int = 20_000) -> None:
    """Many small files inside the cluster, so rmtree lasts long enough to be caught."""
    d = _data(cli) / "pgdata" / "ballast"
    d.mkdir()
    for i in range(n):
        (d / str(i)).write_bytes(b"x")


def _down_volumes(cli: Cli) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "moviectl", "db", "down", "--volumes", "--yes"],
        env=subprocess_env(**cli.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _pg_ctl(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    """moviectl's pg_ctl stop, if it has started it."""
    try:
        return [c for c in psutil.Process(proc.pid).children(True) if c.name() == "pg_ctl"]
    except psutil.Error:
        return []


def _after_kill_the_invariant_holds(cli: Cli) -> str:
    """Either the cluster is intact (and `db up` works) or only `.deleting-<pid>` is left;
    either way the next `db down --volumes` leaves nothing. Which state it was."""
    pgdata = _data(cli) / "pgdata"
    if pgdata.exists():
        state = "intact"
        assert not _trash(cli), _trash(cli)
        r = cli("db", "up")
        assert r.exit_code == 0, r.output
        r = cli("db", "status", "--json")
        assert json.loads(r.stdout)["state"] == "running", r.output
    else:
        state = "aside"
        assert len(_trash(cli)) == 1, list(_data(cli).iterdir())
    r = cli("db", "down", "--volumes", "--yes")
    assert r.exit_code == 0, r.output
    assert not pgdata.exists() and not _trash(cli), list(_data(cli).iterdir())
    return state


@pytest.mark.parametrize("moment", ["at_start", "while_stopping", "after_rename"])
def test_kill_9_of_db_down_volumes_leaves_the_cluster_or_its_trash(emb, moment):
    assert emb("db", "up").exit_code == 0
    if moment == "after_rename":
        _ballast(emb)
    proc = _down_volumes(emb)
    orphans: list[psutil.Process] = []
    try:
        if moment == "while_stopping":
            assert wait_for(lambda: bool(_pg_ctl(proc)) or proc.poll() is not None, 60)
            orphans = _pg_ctl(proc)
        elif moment == "after_rename":
            assert wait_for(lambda: bool(_trash(emb)) or proc.poll() is not None, 120)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # a pg_ctl stop started before the kill goes on stopping the server: let it finish
    # (a `db up` meanwhile is told "shutting down, retry shortly", exit 3)
    psutil.wait_procs(orphans, timeout=90)
    state = _after_kill_the_invariant_holds(emb)
    if moment == "after_rename" and proc.returncode == -signal.SIGKILL:
        assert state == "aside"


def test_a_dead_runs_trash_is_ignored_by_up_and_removed_by_the_next_volumes(emb):
    dead = dead_pid()
    assert not psutil.pid_exists(dead)
    trash = _data(emb) / f".deleting-{dead}"
    (trash / "base").mkdir(parents=True)
    (trash / "PG_VERSION").write_text("18\n")
    (trash / "base" / "1").write_bytes(b"x" * 4096)
    r = emb("db", "up")
    assert r.exit_code == 0, r.output
    assert trash.is_dir() and (_data(emb) / "pgdata" / "PG_VERSION").exists()
    r = emb("db", "down", "--volumes", "--yes")
    assert r.exit_code == 0, r.output
    assert not trash.exists() and not (_data(emb) / "pgdata").exists()


def test_a_live_runs_trash_is_left_alone(emb):
    """A `.deleting-<pid>` of a process still alive may be another run's: not touched."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        trash = _data(emb) / f".deleting-{live.pid}"
        trash.mkdir(parents=True)
        assert emb("db", "up").exit_code == 0
        r = emb("db", "down", "--volumes", "--yes")
        assert r.exit_code == 0, r.output
        assert trash.is_dir()
    finally:
        live.kill()
        live.wait()


def test_two_db_down_volumes_at_once_one_deletes_the_other_finds_nothing(emb):
    assert emb("db", "up").exit_code == 0
    env = subprocess_env(**emb.env)
    cmd = [sys.executable, "-m", "moviectl", "--json", "db", "down", "--volumes", "--yes"]
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, (out, err)
        assert "Traceback" not in out + err, err
    docs = [json.loads(out) for out, _ in outs]
    assert sorted(d["removed_data"] for d in docs) == [False, True], docs
    assert not (_data(emb) / "pgdata").exists() and not _trash(emb)


def test_db_down_volumes_waits_for_the_data_dirs_lock_and_deletes_nothing_meanwhile(emb):
    """Another `db up/down` holds `.lock`: this one waits (no timeout) and touches nothing
    until it is released, then deletes."""
    assert emb("db", "up").exit_code == 0
    with open(_data(emb) / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = _down_volumes(emb)
        try:
            time.sleep(3)
            assert proc.poll() is None, proc.communicate()
            assert (_data(emb) / "pgdata" / "PG_VERSION").exists() and not _trash(emb)
            assert not _pg_ctl(proc)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    assert not (_data(emb) / "pgdata").exists() and not _trash(emb)


def test_the_server_wide_guard_passes_a_server_that_stops_while_it_reads(emb, monkeypatch):
    """The race of two `db down --volumes`: the guard's session is ended by the other's
    stop, and asking again finds "the database system is shutting down" (57P03). The
    server-wide guard passes it, as it passes a server that never answered."""
    import psycopg

    from moviectl.infra.errors import Unreachable
    from moviectl.infra.protect import _read_marks
    from moviectl.infra.settings import load_settings

    assert emb("db", "up").exit_code == 0
    for k, v in emb.env.items():
        monkeypatch.setenv(k, v)
    settings = load_settings(use_dotenv=False)
    t = settings.session_target()
    url = t.with_database("postgres").url(masked=False)
    holder = psycopg.connect(url, autocommit=True)  # keeps a smart shutdown going
    guard_conn = psycopg.connect(url, autocommit=True)
    try:
        pid = int((_data(emb) / "pgdata" / "postmaster.pid").read_text().split()[0])
        holder.execute("SELECT pg_terminate_backend(%s)", (guard_conn.info.backend_pid,))
        psutil.Process(pid).send_signal(signal.SIGTERM)  # smart: new logins get 57P03

        def refused() -> bool:
            try:
                psycopg.connect(url, connect_timeout=5).close()
            except psycopg.OperationalError as e:
                return "shutting down" in str(e)
            return False

        wait_for(refused, timeout=30)
        assert _read_marks(settings, guard_conn, t, True) == {}
        with pytest.raises(Unreachable):  # one database's guard still fails: it must read
            _read_marks(settings, guard_conn, t, False)
    finally:
        guard_conn.close()
        holder.close()
