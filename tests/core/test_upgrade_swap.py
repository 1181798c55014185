"""`moviectl db upgrade --method swap` (pg_upgrade 18's --swap) of the embedded cluster,
PostgreSQL 16 → 18, on real servers: the upgrade verified, --finish, --rollback by the
safety backup, kill -9 while pg_upgrade moves the files, a second copy, the refusals."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import read_until, run_moviectl, subprocess_env
from tests.core.upgrade_support import ROWS, Site, copy_site, fill, seed_cluster, small_disk

pytestmark = pytest.mark.timeout(900)

TAKEN_APART = "the old cluster can no longer be"
SWAP = ("db", "upgrade", "--to", "18", "--method", "swap", "--yes")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return seed_cluster(tmp_path_factory.mktemp("pg16swap"))


@pytest.fixture
def site(seeded: Site, tmp_path: Path):
    s = copy_site(seeded, tmp_path / "site")
    yield s
    s.stop_everything()


def _left(data: Path) -> set[str]:
    return {p.name for p in data.iterdir()} & {"upgrade.json", ".upgrade", "pgdata.old-16"}


def test_swap_upgrades_verified_refuses_a_second_copy_and_finishes(site: Site) -> None:
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    proc = site.start(*SWAP)
    try:
        seen = read_until(proc.stderr, "pg_upgrade --swap", timeout=600)
        assert "pg_upgrade --swap" in seen, seen
        said = seen.index("--method swap: --rollback is impossible")  # said before it asked
        assert said < seen.index("safety backup")
        for args in (SWAP, ("db", "up")):
            r = site.run(*args, timeout=60)
            assert r.returncode == 7 and "is running (pid" in r.stderr, (args, r.stderr)
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "✓ upgrade PostgreSQL 16 → 18 (--method swap)" in out, out
    assert "✓ Alembic revision" in out and "rows) as in the manifest" in out, out
    assert "pg_upgrade " in out and "rollback: impossible" in out, out
    assert site.fingerprint() == ("18", *before[1:])  # every row, the same revision
    r = site.run("db", "upgrade", "--finish", "--yes")
    assert r.returncode == 0, r.stderr
    assert not _left(site.data)
    assert site.fingerprint() == ("18", *before[1:])


def test_swap_rollback_restores_the_safety_backup_into_a_new_old_major_cluster(
    site: Site,
) -> None:
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    doc = site.json(*SWAP)
    assert doc["ok"] is True, doc["failures"]
    url = f"postgresql://movie:movie@127.0.0.1:{site.port}/movies"
    with psycopg.connect(url) as c:  # a write to the new cluster: the rollback loses it
        c.execute("DELETE FROM movies WHERE id IN (SELECT id FROM movies LIMIT 9)")
    assert site.fingerprint()[1] == ROWS - 9
    done = site.json("db", "upgrade", "--rollback", "--yes")
    assert done["action"] == "rollback" and done["from_major"] == 16
    assert doc["backup"] in done["removed"]
    assert site.fingerprint() == before  # 16 again, with the safety backup's rows
    assert not _left(site.data)
    assert site.run("db", "down").returncode == 0
    assert site.run("db", "up").returncode == 0  # MOVIE_PG_BIN_DIR at 16, as said
    assert site.fingerprint() == before


def test_kill_9_mid_swap_starts_nothing_and_names_the_rollback(site: Site) -> None:
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    proc = site.start(*SWAP)
    # pg_upgrade has renamed the old pg_control aside and starts moving its directories
    seen = read_until(proc.stderr, TAKEN_APART, timeout=600)
    assert TAKEN_APART in seen, seen
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    state = json.loads((site.data / "upgrade.json").read_text())
    backup = state["backup"]
    for args in (("db", "up"), SWAP, ("db", "upgrade", "--finish", "--yes")):
        r = site.run(*args, timeout=120)
        assert r.returncode == 5, (args, r.stderr)
        assert "neither cluster" in r.stderr and "--rollback --yes" in r.stderr, r.stderr
        assert backup in r.stderr.replace("\n", "")
    assert not (site.data / "pgdata" / "postmaster.pid").exists()  # nothing started
    found = json.loads(site.run("--json", "doctor").stdout)["findings"]
    assert "--rollback --yes" in next(f for f in found if f["name"] == "upgrade")["fix"]
    assert site.json("backup", "list")["backups"]  # the safety backup stays listed
    done = site.json("db", "upgrade", "--rollback", "--yes")
    assert done["action"] == "rollback"
    assert site.fingerprint() == before
    assert not _left(site.data)


def test_swap_refusals_and_its_dry_run(site: Site) -> None:
    r = site.run("db", "upgrade", "--to", "17", "--method", "swap", "--yes")
    assert r.returncode == 2 and "--method swap needs pg_upgrade 18" in r.stderr, r.stderr
    docker = subprocess_env(**{**site.env(), "MOVIE_DB_BACKEND": "docker"})
    r = run_moviectl(docker, *SWAP, timeout=120)
    assert r.returncode == 2 and "--method swap" in r.stderr and "dump" in r.stderr, r.stderr
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    doc = site.json("db", "upgrade", "--to", "18", "--method", "swap", "--dry-run")
    assert doc["ok"] is True and doc["method"] == "swap", doc["failures"]
    assert any("row counts" in v for v in doc["verification"])
    assert site.fingerprint() == before and not _left(site.data)


def _pg_upgrade_child(parent: int) -> int:
    """The pid of moviectl's pg_upgrade child (a process group of its own)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and argv[0].endswith(b"/pg_upgrade"):
            return int(entry.name)
    raise AssertionError(f"no pg_upgrade child of {parent}")


def test_pg_upgrade_killed_mid_swap_fails_naming_the_safety_backup(site: Site) -> None:
    """pg_upgrade itself dies (kill -9) while it moves files: moviectl exits 5 with the way
    back instead of starting either cluster; --rollback then restores the safety backup."""
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    proc = site.start(*SWAP)
    try:
        seen = read_until(proc.stderr, TAKEN_APART, timeout=600)
        assert TAKEN_APART in seen, seen
        os.kill(_pg_upgrade_child(proc.pid), signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    err = " ".join(err.split())
    assert proc.returncode == 5, err
    assert "pg_upgrade failed" in err and "neither cluster" in err, err
    assert "moviectl db upgrade --rollback --yes restores the safety backup" in err, err
    assert "Traceback" not in err
    assert not (site.data / "pgdata" / "postmaster.pid").exists()
    r = site.run("db", "up")
    assert r.returncode == 5 and "--rollback --yes" in r.stderr, r.stderr
    assert site.json("db", "upgrade", "--rollback", "--yes")["action"] == "rollback"
    assert site.fingerprint() == before


def test_swap_stops_before_moving_anything_while_something_writes(site: Site) -> None:
    """The rollback of a swap is the safety backup: rows written after it would be lost,
    so the upgrade stops (exit 5) with the old cluster running and nothing changed."""
    import threading

    assert site.run("db", "up").returncode == 0
    url = f"postgresql://movie:movie@127.0.0.1:{site.port}/movies"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE scratch (i int)")
    stop = threading.Event()

    def write() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as c:
                while not stop.wait(0.05):
                    c.execute("INSERT INTO scratch VALUES (1)")
        except psycopg.OperationalError:  # the refusal restarts the old server
            return

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        r = site.run(*SWAP)
    finally:
        stop.set()
        writer.join(timeout=30)
    assert r.returncode == 5 and "changed during the safety backup" in r.stderr, r.stderr
    assert site.fingerprint()[0] == "16"  # running, as it was
    assert not _left(site.data)


def test_a_full_disk_before_the_swap_moves_anything_fails_and_the_old_cluster_runs(
    site: Site, tmp_path: Path
) -> None:
    """The disk fills once pg_upgrade --swap has begun: its schema restore (a new
    database's files) cannot be written, pg_upgrade fails before it renames the old
    pg_control, and the old cluster comes back running with every row, as with copy."""
    with small_disk(site, tmp_path) as full:
        assert full.run("db", "up").returncode == 0
        before = full.fingerprint()
        proc = full.start(*SWAP)
        try:
            seen = read_until(proc.stderr, "pg_upgrade --swap", timeout=600)
            assert "pg_upgrade --swap" in seen, seen
            ballast = fill(full.root, leave=2**20)
            _, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        err = " ".join((seen + err).split())
        assert proc.returncode == 1 and "error: pg_upgrade failed: " in err, err
        assert "No space left on device" in err.split("error: pg_upgrade failed: ")[1], err
        assert TAKEN_APART not in err and "neither cluster" not in err, err
        assert "Traceback" not in err
        ballast.unlink()
        assert full.fingerprint() == before  # the old cluster, running, as it was
        assert not _left(full.data)


def _broken_swap(full: Site) -> None:
    """pg_upgrade --swap killed while it moves files (exit 5, neither cluster startable)."""
    proc = full.start(*SWAP)
    try:
        seen = read_until(proc.stderr, TAKEN_APART, timeout=600)
        assert TAKEN_APART in seen, seen
        os.kill(_pg_upgrade_child(proc.pid), signal.SIGKILL)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 5


def test_a_rollback_on_a_full_disk_fails_keeps_what_it_replaced_and_runs_again(
    site: Site, tmp_path: Path
) -> None:
    """After a broken swap, --rollback on a disk too full for a new cluster (its initdb)
    fails with the reason and the way on, keeps what it replaced in .upgrade/, starts
    nothing (`db up` refuses); with space freed it runs again: every row is back."""
    with small_disk(site, tmp_path) as full:
        assert full.run("db", "up").returncode == 0
        before = full.fingerprint()
        _broken_swap(full)
        ballast = fill(full.root, leave=2**20)
        r = full.run("db", "upgrade", "--rollback", "--yes")
        err = " ".join(r.stderr.split())
        assert r.returncode == 8 and "--rollback failed: initdb failed" in err, err
        assert "No space left on device" in err, err
        assert "replaced-* knowingly" in err and "--rollback --yes runs it again" in err, err
        assert "Traceback" not in err
        assert json.loads((full.data / "upgrade.json").read_text())["phase"] == "restoring"
        kept = {p.name for p in (full.data / ".upgrade").iterdir()}
        assert "replaced-pgdata" in kept, kept  # the remains of the old cluster, kept
        assert not (full.data / "pgdata" / "postmaster.pid").exists()  # nothing started
        r = full.run("db", "up")
        assert r.returncode == 5 and "--rollback --yes" in r.stderr, r.stderr
        ballast.unlink()
        done = full.json("db", "upgrade", "--rollback", "--yes")
        assert done["action"] == "rollback" and done["from_major"] == 16
        assert full.fingerprint() == before
        assert not _left(full.data)


def test_a_rollback_after_a_swap_on_a_full_disk_moves_nothing_and_runs_again(
    site: Site, tmp_path: Path
) -> None:
    """After a completed swap, --rollback on a disk with no byte free fails (exit 1, disk
    full) before it moves anything: `db up` serves the new cluster with every row, not an
    empty one; with space freed the rollback runs again and restores the safety backup."""
    with small_disk(site, tmp_path) as full:
        assert full.run("db", "up").returncode == 0
        before = full.fingerprint()
        assert full.json(*SWAP)["ok"] is True
        assert full.run("db", "down").returncode == 0  # its shutdown frees no space later
        ballast = fill(full.root, leave=0)
        r = full.run("db", "upgrade", "--rollback", "--yes")
        err = " ".join(r.stderr.split())
        assert r.returncode == 1 and "--rollback failed: disk full" in err, err
        assert "Traceback" not in err
        ballast.unlink()
        assert Site(full.root, full.port, None).run("db", "up").returncode == 0
        assert full.fingerprint() == ("18", *before[1:])  # nothing moved, nothing lost
        done = full.json("db", "upgrade", "--rollback", "--yes")
        assert done["action"] == "rollback" and done["from_major"] == 16
        assert full.fingerprint() == before
        assert not _left(full.data)
