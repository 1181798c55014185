"""A Docker backend's backup dumped with the container's own pg_dump (the server's major,
17 here, built with zstd) is read back by the host's pg_restore (the embedded wheel's 18,
built without zstd): the default compression is one the host reads, so `backup verify`
drills it; a method the host cannot read, asked for by name, is refused before anything is
written. The real PostgreSQL 17 image (test_upgrade_docker.py's project and images)."""

from __future__ import annotations

import pytest

from tests.core.test_upgrade_docker import Project, images

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]
__all__ = ["images"]  # the fixture, shared


def test_the_containers_dump_is_one_the_hosts_tools_restore(images, tmp_path):
    site = Project(tmp_path, images[1])
    try:
        assert site.run("db", "up", timeout=180).returncode == 0
        assert site.run("migrate", timeout=180).returncode == 0
        doc = site.json("backup")
        assert doc["via"].startswith("docker exec "), doc  # the image's pg_dump 17
        assert doc["compression"] == "gzip:1", doc  # not the image's zstd: the host lacks it
        r = site.run("backup", "verify", doc["path"])
        assert r.returncode == 0 and "restored into a throwaway database" in r.stdout, r.stderr

        listed = sorted((tmp_path / "backups").iterdir())
        r = site.run("backup", "--compress", "zstd:3")
        assert r.returncode == 2 and "cannot read zstd" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 2
        assert sorted((tmp_path / "backups").iterdir()) == listed  # nothing written
        assert site.json("backup", "--compress", "gzip:6")["compression"] == "gzip:6"
    finally:
        site.cleanup()
