"""PITR under faults: the archive script's refusals, an unreachable repository, and
kill -9 of a base backup and of a restore (nothing half-listed, the server untouched)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from moviectl.core.pitr.archive_wal import SCRIPT
from tests.conftest import Cli, start_moviectl, subprocess_env, wait_for
from tests.core.pitr_support import conn, started, status

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    yield from started(tmp_path_factory.mktemp("pitr-faults"))


def _archive(tmp_path: Path, archive: Path, src: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "archive-wal.sh"
    script.write_text(SCRIPT)
    return subprocess.run(
        ["sh", str(script), str(archive), str(src), src.name],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_archive_script_never_overwrites_and_fails_when_unreachable(tmp_path: Path) -> None:
    seg = tmp_path / "000000010000000000000001"
    seg.write_bytes(b"a" * 4096)
    archive = tmp_path / "wal"
    r = _archive(tmp_path, archive, seg)  # the repository is gone: loud failure
    assert r.returncode != 0 and "unreachable" in r.stderr
    assert not archive.exists()  # never created by the script
    archive.mkdir()
    assert _archive(tmp_path, archive, seg).returncode == 0
    assert (archive / seg.name).read_bytes() == seg.read_bytes()
    assert _archive(tmp_path, archive, seg).returncode == 0  # a retry of the same bytes
    seg.write_bytes(b"b" * 4096)
    r = _archive(tmp_path, archive, seg)
    assert r.returncode != 0 and "different contents" in r.stderr
    assert (archive / seg.name).read_bytes() == b"a" * 4096
    assert sorted(p.name for p in archive.iterdir()) == [seg.name]  # no temp file left


def test_unreachable_repository_fails_archiving_and_loses_nothing(pitr: Cli) -> None:
    wal = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "wal"
    assert pitr("backup", "--physical").exit_code == 0
    aside = wal.with_name("wal-unmounted")
    os.rename(wal, aside)
    try:
        with conn(pitr) as c:
            c.execute("CREATE TABLE IF NOT EXISTS u (i int)")
            c.execute("INSERT INTO u SELECT generate_series(1, 1000)")
            c.execute("SELECT pg_switch_wal()")
        assert wait_for(lambda: status(pitr)["archiver"]["failing"], 60)
        r = pitr("pitr", "status", "--json")
        assert r.exit_code == 1
        assert any("archiving is failing" in w for w in json.loads(r.stdout)["warnings"])
        r = pitr("doctor", "--json")
        found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
        assert found["WAL archive"]["status"] == "warn"
    finally:
        os.rename(aside, wal)
    with conn(pitr) as c:
        c.execute("SELECT pg_switch_wal()")
    assert wait_for(lambda: not status(pitr)["archiver"]["failing"], 120)
    st = status(pitr)
    assert st["archive"]["gaps"] == [] and st["warnings"] == []
    with conn(pitr) as c:
        row = c.execute("SELECT count(*) FROM u").fetchone()
    r = pitr("restore", "--physical", "--latest", "--into", "after-outage", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["row_counts"]["public.u"] == row[0]  # type: ignore[index]
    assert pitr("pitr", "discard", "after-outage", "--yes").exit_code == 0


def _kill_when(env: dict[str, str], args: list[str], ready: object) -> None:
    proc = start_moviectl(subprocess_env(**env), *args, cwd=None)
    try:
        assert wait_for(ready, 120), "never got there"  # type: ignore[arg-type]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_kill_9_of_a_base_backup_lists_nothing(pitr: Cli) -> None:
    base = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "base"
    listed = [b["id"] for b in status(pitr)["base_backups"]]
    _kill_when(pitr.env, ["backup", "--physical"], lambda: any(base.glob(".partial-*")))
    assert [b["id"] for b in status(pitr)["base_backups"]] == listed
    with conn(pitr) as c:  # the server answers, untouched
        assert c.execute("SELECT 1").fetchone() == (1,)
    r = pitr("backup", "--physical", "--json")  # the next run clears the leftovers
    assert r.exit_code == 0, r.output
    assert not list(base.glob(".partial-*"))


def test_kill_9_of_a_restore_lists_nothing_and_is_cleared(pitr: Cli) -> None:
    restores = Path(pitr.env["MOVIE_DATA_DIR"]).resolve() / "restores"
    if not status(pitr)["base_backups"]:
        assert pitr("backup", "--physical").exit_code == 0
    target = restores / "killed"
    _kill_when(
        pitr.env,
        ["restore", "--physical", "--latest", "--into", "killed"],
        lambda: (target / "pgdata" / "postmaster.pid").exists(),
    )
    assert "killed" not in [x["name"] for x in status(pitr)["restores"]]
    with conn(pitr) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    r = pitr("restore", "--physical", "--latest", "--into", "killed", "--json")
    assert r.exit_code == 0, r.output  # the leftover was stopped and removed first
    assert [x["name"] for x in status(pitr)["restores"]] == ["killed"]


def test_a_stalled_archiver_is_a_warning_and_refuses_a_latest_promote(pitr: Cli) -> None:
    """The archiver stopped (SIGSTOP: a hung archive_command): `restore --latest` waits at
    most MOVIE_STALL_TIMEOUT for the newest segment, then restores what the archive holds
    and says which commits it lacks; `--latest --promote` refuses (exit 5) before anything
    is restored: promoted, it would lose the live server's newest commits."""
    assert pitr("backup", "--physical").exit_code == 0
    with conn(pitr) as c:
        row = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'archiver'")
        archiver = int(row.fetchone()[0])  # type: ignore[index]
        c.execute("SELECT pg_switch_wal()")
    os.kill(archiver, signal.SIGSTOP)
    try:
        with conn(pitr) as c:
            c.execute("CREATE TABLE late AS SELECT generate_series(1, 100) AS i")
        listed = [x["name"] for x in status(pitr)["restores"]]
        quick = {"MOVIE_STALL_TIMEOUT": "2"}
        r = pitr("restore", "--physical", "--latest", "--promote", "--yes", "--json", **quick)
        assert r.exit_code == 5, r.output
        doc = json.loads(r.stdout)
        assert "would lose the commits" in doc["message"] and "nothing" in doc["message"], doc
        assert [x["name"] for x in status(pitr)["restores"]] == listed
        r = pitr("restore", "--physical", "--latest", "--into", "behind", "--json", **quick)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert "public.late" not in doc["row_counts"], doc["row_counts"]
        assert any("had not archived WAL segment" in w for w in doc["warnings"]), doc
    finally:
        os.kill(archiver, signal.SIGCONT)
    assert pitr("pitr", "discard", "behind", "--yes").exit_code == 0
    with conn(pitr) as c:
        c.execute("SELECT pg_switch_wal()")
    r = pitr("restore", "--physical", "--latest", "--into", "caught-up", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["row_counts"].get("public.late") == 100 and doc["warnings"] == [], doc
    assert pitr("pitr", "discard", "caught-up", "--yes").exit_code == 0


def _cluster(pitr: Cli) -> list[psutil.Process]:
    pgdata = Path(pitr.env["MOVIE_DATA_DIR"]) / "pgdata"
    pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]


def _basebackups(port: str, parent: int | None = None) -> list[psutil.Process]:
    """pg_basebackup processes to this port (``parent``: that process's children only)."""
    found = []
    procs = psutil.Process(parent).children() if parent else psutil.process_iter()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            if p.name() == "pg_basebackup" and re.search(
                rf"port='?{port}\b", " ".join(p.cmdline())
            ):
                found.append(p)
    return found


def test_a_server_stalled_mid_base_backup_is_exit_3_in_bounded_time(pitr: Cli) -> None:
    """The server stops answering (SIGSTOP) while pg_basebackup copies: no I/O for
    MOVIE_STALL_TIMEOUT and no answer to a probe, so pg_basebackup is killed and the backup
    fails (exit 3, naming the server), nothing listed, no pg_basebackup left behind."""
    port = pitr.env["MOVIE_DB_PORT"]
    with conn(pitr) as c:  # enough to copy that the pause lands mid-copy
        c.execute("CREATE TABLE IF NOT EXISTS bulk (g int, m text)")
        c.execute("INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 1000000) g")
    listed = [b["id"] for b in status(pitr)["base_backups"]]
    env = subprocess_env(**pitr.env, MOVIE_STALL_TIMEOUT="3", MOVIE_CONNECT_TIMEOUT="2")
    proc = start_moviectl(env, "--json", "backup", "--physical", cwd=None)
    paused: list[psutil.Process] = []
    try:
        assert wait_for(lambda: _basebackups(port, proc.pid) or proc.poll() is not None, 120)
        assert proc.poll() is None, "pg_basebackup finished before the pause"
        paused = _cluster(pitr)
        for p in paused:
            p.send_signal(signal.SIGSTOP)
        assert _basebackups(port, proc.pid), "the pause landed after pg_basebackup's end"
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        gone = wait_for(lambda: not _basebackups(port), 30)  # while the server is still paused
    finally:
        for p in paused:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGCONT)
        proc.kill()
    assert proc.returncode == 3, (out, err)
    assert "stopped answering" in json.loads(out)["message"] and took < 60, (out, took)
    assert gone, _basebackups(port)
    assert [b["id"] for b in status(pitr)["base_backups"]] == listed
    assert pitr("backup", "--physical").exit_code == 0  # the server, resumed, backs up


def test_a_base_id_another_run_holds_is_drawn_again(tmp_path, monkeypatch) -> None:
    """Two `backup --physical` started in the same millisecond drew one id, and the second
    rename failed ("Directory not empty", CI): an id whose work directory or backup exists
    is refused before anything is copied, and the run draws the next one."""
    import contextlib as cl

    from moviectl.core.pitr import basebackup
    from moviectl.core.pitr.store import IdTaken, LocalStore

    store = LocalStore(tmp_path)
    base = tmp_path / "base"
    taken, held, free = "base-20261203T190512.001Z", "base-20261203T190512.002Z", "x"
    (base / f".partial-{taken}-{os.getppid()}").mkdir(parents=True)  # a live rival's
    (base / held).mkdir()  # a finished backup's
    for name in (taken, held):
        with pytest.raises(IdTaken), store.new_base(name, exclusive=True):
            pass
    assert sorted(p.name for p in base.iterdir()) == [f".partial-{taken}-{os.getppid()}", held]
    ids = iter([taken, held, free])
    monkeypatch.setattr(basebackup, "new_base_id", lambda: next(ids))
    with cl.ExitStack() as stack:
        got, work = basebackup._reserve(store, stack)
        assert got == free and work.name == f".partial-{free}-{os.getpid()}"
        (work / "f").write_text("x")
    assert (base / free / "f").exists()


def test_two_base_backups_at_once_are_both_whole(pitr: Cli) -> None:
    """Two `backup --physical` started together: each copies into its own partial
    directory and both are listed, verified, under distinct names; a restore from the
    newest one holds the rows."""
    listed = {b["id"] for b in status(pitr)["base_backups"]}
    env = subprocess_env(**pitr.env)
    procs = [start_moviectl(env, "--json", "backup", "--physical", cwd=None) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    made = {b["id"]: b for b in status(pitr)["base_backups"] if b["id"] not in listed}
    assert len(made) == 2 and all(b["verified"] for b in made.values()), made
    base = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "base"
    assert not list(base.glob(".partial-*"))
    r = pitr("restore", "--physical", "--latest", "--into", "after-two", "--json")
    assert r.exit_code == 0, r.output
    assert pitr("pitr", "discard", "after-two", "--yes").exit_code == 0
