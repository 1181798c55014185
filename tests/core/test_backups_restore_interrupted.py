"""Restores that are interrupted or run at once (issue 26, items 4 and 5)."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import Cli, backup_json, run_at_once, subprocess_env, wait_for
from tests.core.test_backups_interrupted import _tools_of


@pytest.fixture
def seeded(seeded_db_url):
    """The CLI on a database of 200,000 movies (a restore long enough to interrupt)."""
    return Cli({"MOVIE_DATABASE_URL": seeded_db_url})


def _loading(proc: subprocess.Popen[bytes]) -> bool:
    """Is the load's pg_restore running (not the safety backup's read-back, --list)?"""
    for tool in _tools_of(proc.pid):
        try:
            if "--exit-on-error" in tool.cmdline():
                return True
        except psutil.Error:  # gone, or a zombie, since it was listed
            continue
    return False


def _count(url: str) -> int:
    with psycopg.connect(url) as c:
        return int(c.execute("SELECT count(*) FROM movies").fetchone()[0])


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_forced_restore_says_what_it_left_and_how_to_undo_it(
    seeded, tmp_path, seeded_db_url, sig, code
):
    env = {**seeded.env, "MOVIE_BACKUP_DIR": str(tmp_path / "safety")}
    path = Path(backup_json(seeded, tmp_path)["path"])
    before = _count(seeded_db_url)
    db = seeded_db_url.rsplit("/", 1)[1].split("?")[0]
    cmd = [sys.executable, "-m", "moviectl", "restore", str(path), "--into", db, "--force"]
    for _ in range(3):  # a busy machine can miss a short load: then it ran whole; again
        proc = subprocess.Popen(
            [*cmd, "--yes"],
            env=subprocess_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            seen = wait_for(lambda p=proc: _loading(p) or p.poll() is not None, 120)
            assert seen, "pg_restore never started"
            if proc.poll() is not None:
                assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
                proc.communicate(timeout=60)
                continue
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == code, err
            break
        finally:
            if proc.poll() is None:
                proc.kill()
    else:
        pytest.fail("the restore finished before it could be interrupted, three times")
    text = " ".join(err.decode().split())  # however the console wrapped it
    undo = text.split("put it back with: ", 1)[1].split(" --yes", 1)[0] + " --yes"
    argv = shlex.split(undo)
    assert argv[:2] == ["moviectl", "restore"] and argv[3:] == ["--into", db, "--force", "--yes"]
    assert Path(argv[2]).exists() and f"the safety backup is {argv[2]}" in text
    r = seeded(*argv[1:], **env)  # exactly as printed
    assert r.exit_code == 0, r.output
    assert _count(seeded_db_url) == before


def test_two_restores_of_one_file_at_once_land_in_two_intact_databases(
    seeded, tmp_path, seeded_db_url
):
    path = Path(backup_json(seeded, tmp_path)["path"])
    docs = run_at_once(seeded.env, "restore", str(path), n=2, timeout=600)
    names = {d["database"] for d in docs}
    assert len(names) == 2, names
    base = seeded_db_url.rsplit("/", 1)[0]
    try:
        for d in docs:
            assert d["created"] and d["matches_manifest"], d
            assert _count(f"{base}/{d['database']}") == d["row_counts"]["movies"]
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            for n in names:
                c.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')


def cut_the_load_midway(
    args: list[str], env: dict[str, str], url: str, datname: str
) -> tuple[int, str]:
    """Run ``moviectl ARGS``; once its pg_restore runs, end the sessions on the databases
    matching ``datname`` (an SQL condition) as a fast shutdown does: (exit code, stderr
    with the console's wrapping undone)."""
    cmd = [sys.executable, "-m", "moviectl", *args]
    proc = subprocess.Popen(
        cmd, env=subprocess_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert wait_for(lambda: [t for t in _tools_of(proc.pid) if t.name() == "pg_restore"])
        with psycopg.connect(url, autocommit=True) as c:
            # every session on it ended, again and again until moviectl ends, as a fast
            # shutdown does: pg_restore -j never notices an idle worker's session ended alone
            ended, deadline = 0, time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                ended += c.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    f"WHERE datname {datname}"
                ).fetchone()[0]
                time.sleep(0.05)
            assert ended
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, " ".join(err.decode().split())


def test_the_server_going_away_mid_restore_is_exit_3(seeded, tmp_path, seeded_db_url):
    """A fast shutdown ends every session with 57P01, as pg_terminate_backend does."""
    path = Path(backup_json(seeded, tmp_path)["path"])
    code, text = cut_the_load_midway(
        ["restore", str(path), "--into", "gone_midway"],
        seeded.env,
        seeded_db_url,
        "= 'gone_midway'",
    )
    assert code == 3, text
    assert "went away" in text
    with psycopg.connect(seeded_db_url, autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS gone_midway WITH (FORCE)")


def _parallel_load(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The load's pg_restore -j and its forked workers, once the workers run."""
    for tool in _tools_of(proc.pid):
        try:
            if "-j" in tool.cmdline() and tool.children():
                return [tool, *tool.children()]
        except psutil.Error:
            continue
    return []


@pytest.mark.skipif((__import__("os").cpu_count() or 1) < 2, reason="one core: no -j")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_parallel_restore_cut_short_leaves_no_pg_restore_worker(
    seeded, tmp_path, seeded_db_url, sig
):
    """A default restore runs pg_restore -j (the cores, at most 4): kill -9 or SIGTERM of
    moviectl while the workers load ends the leader (the kernel's SIGTERM, or moviectl's
    kill of its process group) and every worker with it; after SIGTERM the database it
    created is dropped."""
    path = Path(backup_json(seeded, tmp_path)["path"])
    cmd = [sys.executable, "-m", "moviectl", "restore", str(path), "--into", "cut_parallel"]
    try:
        for _ in range(3):  # a busy machine can miss a short load: then it ran whole; again
            proc = subprocess.Popen(
                cmd,
                env=subprocess_env(**seeded.env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                assert wait_for(lambda p=proc: _parallel_load(p) or p.poll() is not None, 120)
                tools = _parallel_load(proc)
                if not tools:
                    proc.communicate(timeout=60)
                    with psycopg.connect(seeded_db_url, autocommit=True) as c:
                        c.execute("DROP DATABASE IF EXISTS cut_parallel WITH (FORCE)")
                    continue
                proc.send_signal(sig)
                proc.communicate(timeout=60)
                assert wait_for(lambda t=tools: not any(p.is_running() for p in t), 30), tools
                break
            finally:
                if proc.poll() is None:
                    proc.kill()
        else:
            pytest.fail("the restore finished before it could be interrupted, three times")
        if sig == signal.SIGTERM:
            with psycopg.connect(seeded_db_url) as c:
                gone = "SELECT count(*) FROM pg_database WHERE datname = 'cut_parallel'"
                assert c.execute(gone).fetchone()[0] == 0
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS cut_parallel WITH (FORCE)")
