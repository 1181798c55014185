"""`pitr enable`'s bind mount of the WAL archive: recorded per project, and a container
made without it drifts (so `db up` recreates it, data volume kept). No engine needed."""

from __future__ import annotations

from pathlib import Path

from moviectl.core.servers.compose import DbService
from moviectl.core.servers.docker_engine import container_drift, create_kwargs, read_binds


def _svc(**binds: str) -> DbService:
    return DbService(
        project="p",
        image="postgres:15",
        environment={"POSTGRES_USER": "movie", "POSTGRES_DB": "movies"},
        host_ip="127.0.0.1",
        host_port=5432,
        container_port=5432,
        volume="pgdata",
        volume_target="/var/lib/postgresql/data",
        binds=dict(binds),
    )


def _attrs(binds: list[str]) -> dict[str, object]:
    return {
        "Config": {"Image": "postgres:15", "Env": ["POSTGRES_USER=movie", "POSTGRES_DB=movies"]},
        "HostConfig": {
            "PortBindings": {"5432/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5432"}]},
            "Binds": binds,
        },
    }


def test_a_container_without_the_archive_mount_drifts_and_one_with_it_does_not() -> None:
    svc = _svc(**{"/srv/backups/pitr": "/srv/backups/pitr"})
    volume = "p_pgdata:/var/lib/postgresql/data:rw"
    assert "mounts" in container_drift(_attrs([volume]), svc)
    assert container_drift(_attrs([volume, "/srv/backups/pitr:/srv/backups/pitr:rw"]), svc) == {}
    assert container_drift(_attrs([volume]), _svc()) == {}  # archiving never enabled
    made = create_kwargs(svc, "owner", {}, {})["volumes"]
    assert made["/srv/backups/pitr"] == {"bind": "/srv/backups/pitr", "mode": "rw"}


def test_the_recorded_binds_are_read_leniently(tmp_path: Path) -> None:
    path = tmp_path / ".docker-p.binds.json"
    assert read_binds(path) == {}  # never enabled
    path.write_text("{not json")
    assert read_binds(path) == {}
    path.write_text('{"/a": "/a"}')
    assert read_binds(path) == {"/a": "/a"}
