"""`moviectl db upgrade` of the embedded cluster, PostgreSQL 16 → 18, on real servers: the dry
run, the upgrade and its verification, --rollback, --finish, and the faults of
docs/safety.md (kill -9 mid-upgrade, a full disk, a second copy running)."""

from __future__ import annotations

import json
import os
import shlex
import signal
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, read_until
from tests.core.upgrade_support import (
    ROWS,
    Site,
    copy_site,
    fill,
    pg16_bin,
    seed_cluster,
    small_disk,
)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return seed_cluster(tmp_path_factory.mktemp("pg16"))


@pytest.fixture
def site(seeded: Site, tmp_path: Path):
    s = copy_site(seeded, tmp_path / "site")
    yield s
    s.stop_everything()


def _tree(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name not in ("log", ".lock"))


def test_dry_run_upgrades_a_throwaway_copy_and_changes_nothing(site: Site) -> None:
    assert site.run("db", "up").returncode == 0
    before, tree = site.fingerprint(), _tree(site.data)
    assert before[:2] == ("16", ROWS)
    doc = site.json("db", "upgrade", "--to", "18", "--dry-run")
    assert doc["ok"] is True and doc["dry_run"] is True, doc["failures"]
    assert {p["name"] for p in doc["phases"]} >= {"restore", "pg_upgrade_check", "pg_upgrade"}
    assert any("row counts" in v for v in doc["verification"])
    assert doc["next_steps"] == ["moviectl db upgrade --to 18 --method copy --yes"]
    assert site.fingerprint() == before and _tree(site.data) == tree  # the live cluster as it was
    assert not list(site.data.glob(".upgrade*"))  # the throwaway clusters are gone


def _readme_block() -> list[str]:
    """The command lines of the README's "Upgrading PostgreSQL" block, comments cut."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Upgrading PostgreSQL") :]
    start = section.index("```sh\n") + 6
    block = section[start : section.index("\n```", start)]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_sequence_keeps_the_old_cluster_until_finish_and_rolls_back(
    site: Site,
) -> None:
    """The README's block, line by line (MOVIE_PG_BIN_DIR at the wheel's 16), each step
    checked: rows, revision and files as promised."""
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    as_upgraded = ("18", *before[1:])
    url = f"postgresql://movie:movie@127.0.0.1:{site.port}/movies"
    steps = _readme_block()
    assert steps[0].startswith("export MOVIE_PG_BIN_DIR=") and steps[-1] == "moviectl db up"
    for line in steps:
        argv = shlex.split(line)
        if argv[0] == "export":
            site.bin_dir = pg16_bin()  # the README names Debian's path; the wheel's 16 here
            continue
        if argv[0] == "unset":
            site.bin_dir = None
            continue
        assert argv[0] == "moviectl", line
        r = site.run("--json", *argv[1:])
        assert r.returncode == 0, (line, r.stdout, r.stderr)
        doc = json.loads(r.stdout)
        if "--dry-run" in argv:
            assert doc["ok"] and doc["dry_run"] and site.fingerprint() == before
            assert any("row counts" in v for v in doc["verification"])
        elif "--to" in argv:
            assert doc["ok"] is True, doc["failures"]
            assert doc["backup"] and Path(doc["backup"]).exists()  # the safety backup, named
            assert site.fingerprint() == as_upgraded  # every row, the same revision
            assert (site.data / "pgdata.old-16" / "PG_VERSION").read_text().strip() == "16"
            again = site.run("db", "upgrade", "--to", "18", "--yes")
            assert again.returncode == 5 and "not finished" in again.stderr
            if "link" in argv:
                assert "impossible" in doc["rollback"]
                r = site.run("db", "upgrade", "--rollback", "--yes")
                assert r.returncode == 5 and "--method link" in r.stderr  # nothing touched
                assert site.fingerprint() == as_upgraded
            else:
                found = json.loads(site.run("--json", "doctor").stdout)["findings"]
                upgrade = next(f for f in found if f["name"] == "upgrade")
                assert "awaits --finish" in upgrade["detail"] and "--finish" in upgrade["fix"]
                with psycopg.connect(url) as c:  # a write the rollback discards
                    c.execute("DELETE FROM movies WHERE id IN (SELECT id FROM movies LIMIT 9)")
        elif "--rollback" in argv:
            assert doc["action"] == "rollback" and doc["from_major"] == 16
            assert site.fingerprint() == before  # 16 again, with the data it had
            assert not {"upgrade.json", "pgdata.old-16"} & set(_tree(site.data))
        elif "--finish" in argv:
            assert doc["action"] == "finish" and not (site.data / "pgdata.old-16").exists()
            assert not (site.data / "upgrade.json").exists()
            assert site.run("db", "down").returncode == 0
    assert site.fingerprint() == as_upgraded  # `db up` on the wheel's own 18


def test_kill_9_mid_copy_leaves_the_old_cluster_startable(site: Site) -> None:
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    proc = site.start("db", "upgrade", "--to", "18", "--yes")
    seen = read_until(proc.stderr, "Copying user relation files", timeout=600)
    assert "Copying user relation files" in seen, seen
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (site.data / "upgrade.json").exists()  # the killed upgrade is on record
    r = site.run("db", "up")  # undoes it before starting anything
    assert r.returncode == 0, r.stderr
    assert site.fingerprint() == before
    assert _tree(site.data).count("pgdata") == 1 and not (site.data / ".upgrade").exists()
    assert not (site.data / "upgrade.json").exists()
    listed = site.json("backup", "list")
    assert listed["backups"], listed  # the safety backup stays listed


def test_a_second_copy_is_refused_while_one_upgrades(site: Site) -> None:
    assert site.run("db", "up").returncode == 0
    proc = site.start("db", "upgrade", "--to", "18", "--yes")
    try:
        seen = read_until(proc.stderr, "pg_upgrade --copy", timeout=600)
        assert "pg_upgrade --copy" in seen, seen
        for args in (("db", "upgrade", "--to", "18", "--yes"), ("db", "up"), ("db", "down")):
            r = site.run(*args, timeout=60)
            assert r.returncode == 7 and "is running (pid" in r.stderr, (args, r.stderr)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert site.fingerprint()[:2] == ("18", ROWS)


def test_a_full_disk_during_the_copy_fails_and_the_old_cluster_runs(
    site: Site, tmp_path: Path
) -> None:
    with small_disk(site, tmp_path) as full:
        assert full.run("db", "up").returncode == 0
        before = full.fingerprint()
        proc = full.start("db", "upgrade", "--to", "18", "--yes")
        seen = read_until(proc.stderr, "pg_upgrade --copy", timeout=600)
        assert "pg_upgrade --copy" in seen, seen
        # the new cluster is made: fill the disk so that the copy of the movies cannot fit
        ballast = fill(full.root, 8 * 2**20)
        _, err = proc.communicate(timeout=600)
        err = seen + err
        assert proc.returncode == 1 and "No space left on device" in err, err
        assert "Traceback" not in err
        ballast.unlink()
        assert full.fingerprint() == before  # the old cluster, running, as it was
        assert not (full.data / ".upgrade").exists()
        assert not (full.data / "upgrade.json").exists()


def test_refusals_go_back_and_missing_majors(site: Site) -> None:
    r = site.run("db", "upgrade", "--to", "15", "--yes")
    assert r.returncode == 2 and "a major never goes back" in r.stderr
    r = site.run("db", "upgrade", "--to", "17", "--dry-run")
    assert r.returncode == 9, r.stderr
    assert "no PostgreSQL 17 server binaries here" in r.stderr
    assert "apt-get install postgresql-17" in r.stderr
    r = Site(site.root, site.port, None).run("db", "up")  # 16 data, the wheel's 18
    assert r.returncode == 5 and "moviectl db upgrade --to 18 --dry-run" in r.stderr


def test_dump_and_clone_in_dry_runs(site: Site) -> None:
    """--method dump (pg_dumpall | psql) verifies like the others; clone needs a filesystem
    that clones (reflink): where it cannot, pg_upgrade's own reason, nothing changed."""
    assert site.run("db", "up").returncode == 0
    before = site.fingerprint()
    doc = site.json("db", "upgrade", "--to", "18", "--method", "dump", "--dry-run")
    assert doc["ok"] is True and "dump" in {p["name"] for p in doc["phases"]}, doc["failures"]
    assert any("row counts" in v for v in doc["verification"])
    r = site.run("--json", "db", "upgrade", "--to", "18", "--method", "clone", "--dry-run")
    doc = json.loads(r.stdout)
    if not doc["ok"]:
        assert r.returncode == 1 and "could not clone file" in doc["failures"][0], doc
    assert site.fingerprint() == before
