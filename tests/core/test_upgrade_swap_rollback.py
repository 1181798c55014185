"""`moviectl db upgrade --rollback` after `--method swap`, interrupted on real servers
(PostgreSQL 16 → 18 → 16): SIGTERM and kill -9 while it restores the safety backup, the
state a kill leaves between its steps, and a rerun after each: what it replaced (the only
copy of the data besides the backup) is kept, and no half-restored cluster serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.core.upgrade_support import Site, copy_site, seed_cluster

pytestmark = pytest.mark.timeout(900)

SWAP = ("db", "upgrade", "--to", "18", "--method", "swap", "--yes")
ROLLBACK = ("db", "upgrade", "--rollback", "--yes")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return seed_cluster(tmp_path_factory.mktemp("pg16swaprb"))


@pytest.fixture
def swapped(seeded: Site, tmp_path: Path):
    """A site upgraded 16 → 18 by --method swap (done, not finished), and its fingerprint
    before the upgrade."""
    s = copy_site(seeded, tmp_path / "site")
    try:
        assert s.run("db", "up").returncode == 0
        before = s.fingerprint()
        assert s.json(*SWAP)["ok"] is True
        yield s, before
    finally:
        s.stop_everything()


def _left(data: Path) -> set[str]:
    return {p.name for p in data.iterdir()} & {"upgrade.json", ".upgrade", "pgdata.old-16"}


def _restoring_child(parent: int, timeout: float = 300) -> int:
    """The pid of the rollback's pg_restore or psql child: the restore has begun."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv0 = (entry / "cmdline").read_bytes().split(b"\0")[0]
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == parent and argv0.rsplit(b"/", 1)[-1] in (b"pg_restore", b"psql"):
                return int(entry.name)
        time.sleep(0.02)
    raise AssertionError(f"no pg_restore/psql child of {parent}")


def _serves(site: Site) -> bool:
    try:
        with psycopg.connect(
            f"postgresql://movie:movie@127.0.0.1:{site.port}/postgres", connect_timeout=3
        ):
            return True
    except psycopg.OperationalError:
        return False


def _interrupted_mid_restore(site: Site, sig: signal.Signals) -> str:
    proc = site.start(*ROLLBACK)
    try:
        _restoring_child(proc.pid)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9), err
    return str(err)


def _kept(site: Site) -> None:
    """Phase restoring, and what the rollback replaced kept in .upgrade/."""
    assert json.loads((site.data / "upgrade.json").read_text())["phase"] == "restoring"
    kept = site.data / ".upgrade" / "replaced-pgdata"
    assert (kept / "PG_VERSION").read_text().strip() == "18", "the 18 cluster, kept"


def _refused_then_rerun(site: Site, before: tuple[str, int, str, str]) -> None:
    r = site.run("db", "up")
    said = " ".join(r.stderr.split())
    assert r.returncode == 5 and "--rollback --yes runs it again" in said, said
    # what happened (not "pg_upgrade moved the old cluster's files"), and where the data is
    assert "stopped while it restored the safety backup" in said, said
    assert "replaced-*" in said and "neither cluster" not in said, said
    assert not _serves(site)  # nothing started, nothing left serving
    found = json.loads(site.run("--json", "doctor").stdout)["findings"]
    assert "--rollback --yes" in next(f for f in found if f["name"] == "upgrade")["fix"]
    _kept(site)
    done = site.json(*ROLLBACK)
    assert done["action"] == "rollback" and done["from_major"] == 16
    assert site.fingerprint() == before
    assert not _left(site.data)


def test_sigterm_of_a_rollback_mid_restore_stops_its_server_and_runs_again(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """SIGTERM while --rollback restores the safety backup: exit 143, the half-restored
    server stopped (it serves nobody), the replaced cluster kept; a rerun restores it all."""
    site, before = swapped
    err = _interrupted_mid_restore(site, signal.SIGTERM)
    assert "Traceback" not in err, err
    assert not _serves(site), "a half-restored cluster was left serving"
    _kept(site)
    _refused_then_rerun(site, before)


def test_kill_9_of_a_rollback_mid_restore_keeps_what_it_replaced_and_runs_again(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """kill -9 while --rollback restores: the half-restored cluster (on a port of its own
    until verified) never served the project's port, the replaced cluster stays in
    .upgrade/, `db up` refuses (exit 5) and leaves nothing serving, doctor names --rollback;
    a rerun deletes only its own half-restored cluster and restores every row."""
    site, before = swapped
    _interrupted_mid_restore(site, signal.SIGKILL)
    assert not _serves(site), "a half-restored cluster serves on the project's port"
    _kept(site)
    _refused_then_rerun(site, before)


def test_a_rollback_killed_between_its_renames_starts_nothing_and_runs_again(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """The state a kill -9 leaves between the rollback's steps (microseconds apart, so made
    here by hand, as the code does them): phase restoring on record, pgdata moved into
    .upgrade/replaced-pgdata, pgdata.old-16 not yet. `db up` refuses and never makes an
    empty cluster in pgdata's place; the rerun moves the rest and restores every row."""
    site, before = swapped
    assert site.run("db", "down").returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = json.loads((site.data / "upgrade.json").read_text())
    state.update(phase="restoring", pid=gone.pid)
    (site.data / "upgrade.json").write_text(json.dumps(state))
    (site.data / "pgdata").rename(site.data / ".upgrade" / "replaced-pgdata")
    r = site.run("db", "up")
    assert r.returncode == 5 and "--rollback --yes" in r.stderr, r.stderr
    assert not (site.data / "pgdata").exists(), "db up made a cluster in pgdata's place"
    assert (site.data / "pgdata.old-16").is_dir()
    _refused_then_rerun(site, before)


def test_two_rollbacks_at_once_restore_once(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """Two --rollback at once: one restores, the other is refused at once naming it (exit
    7; test_upgrade_rollback_lock.py holds the first to show it); every row is there."""
    site, before = swapped
    procs = [site.start(*ROLLBACK) for _ in range(2)]
    try:
        done = [(p.communicate(timeout=600), p.returncode) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    codes = sorted(code for _, code in done)
    errs = " ".join(err for (_, err), _ in done)
    assert codes == [0, 7], errs
    assert "`db upgrade --rollback` of the cluster" in " ".join(errs.split()), errs
    assert site.fingerprint() == before
    assert not _left(site.data)


def test_prune_keeps_the_safety_backup_of_an_unfinished_swap(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """After a swap, nightly backups of the new cluster and a `backup prune --keep-last 1`
    (the newer one verified, so the safety backup is neither the newest nor the newest
    verified): the safety backup stays, the one way back; --rollback then restores it."""
    site, before = swapped
    safety = Path(json.loads((site.data / "upgrade.json").read_text())["backup"])
    newer = site.json("backup")["path"]
    assert site.run("backup", "verify", newer).returncode == 0
    doc = site.json("backup", "prune", "--keep-last", "1", "--yes")
    assert safety.is_file(), doc
    kept = {Path(d["path"]).name: d["reasons"] for d in doc["kept"]}
    assert any("unfinished upgrade" in r for r in kept[safety.name]), kept
    done = site.json(*ROLLBACK)
    assert done["action"] == "rollback"
    assert site.fingerprint() == before


def test_a_rollback_killed_right_after_its_state_write_moved_nothing_and_runs_again(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    """The state a kill -9 leaves right after --rollback recorded phase restoring, before it
    moved anything (made by hand): `db up` refuses (exit 5), says that pgdata was not moved
    (not that something is kept in .upgrade/) and starts nothing; the rerun restores."""
    site, before = swapped
    assert site.run("db", "down").returncode == 0
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = json.loads((site.data / "upgrade.json").read_text())
    state.update(phase="restoring", pid=gone.pid)
    (site.data / "upgrade.json").write_text(json.dumps(state))
    r = site.run("db", "up")
    said = " ".join(r.stderr.split())
    assert r.returncode == 5 and "--rollback --yes runs it again" in said, said
    assert "had not moved" in said and "replaced-*" not in said, said
    assert not _serves(site)
    assert (site.data / "pgdata" / "PG_VERSION").read_text().strip() == "18"  # as it was
    done = site.json(*ROLLBACK)
    assert done["action"] == "rollback" and done["from_major"] == 16
    assert site.fingerprint() == before
    assert not _left(site.data)
