"""`backup prune` and an unfinished `db upgrade` of the Docker backend: the safety backup
its `--rollback` needs is kept whatever the policy, as for the embedded backend
(test_upgrade_swap_rollback.py::test_prune_keeps_the_safety_backup_of_an_unfinished_swap),
and released once the rollback is done. A real 15 → 17 upgrade (test_upgrade_docker.py's
project and images)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core.test_upgrade_docker import Project, images, site

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]
__all__ = ["images", "site"]  # the fixtures, shared
KEPT = "the safety backup of an unfinished upgrade (its --rollback)"


def test_prune_keeps_the_safety_backup_of_an_unfinished_docker_upgrade(
    site: Project, images: tuple[str, str]
) -> None:
    """After the upgrade (done, not finished), a newer verified backup and `prune
    --keep-last 1`: the safety backup is neither the newest nor the newest verified, and
    stays, saying why; the rollback then brings every row back; after it the backup is an
    ordinary one again."""
    old, new = images
    before = site.facts()
    doc = site.json("db", "upgrade", "--to", "17", "--image", new, "--yes", timeout=900)
    safety = Path(doc["backup"])
    site.env["MOVIE_DB_IMAGE"] = new
    newer = site.json("backup", "-Z", "gzip")["path"]  # any compression the verify reads
    assert site.run("backup", "verify", newer).returncode == 0
    pruned = site.json("backup", "prune", "--keep-last", "1", "--yes")
    assert safety.is_file(), pruned
    kept = {Path(d["path"]).name: d["reasons"] for d in pruned["kept"]}
    assert KEPT in kept.get(safety.name, []), kept
    done = site.json("db", "upgrade", "--rollback", "--yes", timeout=600)
    assert done["action"] == "rollback"
    assert site.facts() == before
    site.env["MOVIE_DB_IMAGE"] = old
    plan = site.json("backup", "prune", "--keep-last", "1", "--dry-run")
    gone = {Path(d["path"]).name: d["reasons"] for d in plan["decisions"]}
    assert gone[safety.name] == ["outside the policy"], gone
