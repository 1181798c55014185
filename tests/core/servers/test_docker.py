"""The Docker backend against a real engine (`.ci/run` prepares one and the image)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import Cli, occupied, run_at_once, subprocess_env
from tests.ports import free_port

pytestmark = pytest.mark.docker


def _engine() -> bool:
    from moviectl.core.servers.docker_engine import engine_answers

    return engine_answers()


@pytest.fixture(scope="module")
def image() -> str:
    if not _engine():
        if os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine (set MOVIECTL_REQUIRE_DOCKER=1 to fail instead)")
    img = os.environ.get("MOVIE_DB_IMAGE")
    if not img:
        if os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but MOVIE_DB_IMAGE is not set")
        pytest.skip("MOVIE_DB_IMAGE not set (../shared/ci/docker-postgres prints one)")
    return img


@pytest.fixture
def dk(image, tmp_path):
    project = f"mtest{secrets.token_hex(4)}"
    cli = Cli(
        {
            "MOVIE_DB_BACKEND": "docker",
            "MOVIE_DB_IMAGE": image,
            "MOVIE_DB_PORT": str(free_port()),
            "MOVIE_DB_PASSWORD": "dk-secret",
            "MOVIE_COMPOSE_PROJECT": project,
            "MOVIE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    yield cli
    cli("db", "down", "--volumes", "--yes")


def _url(cli: Cli) -> str:
    port = cli.env["MOVIE_DB_PORT"]
    return f"postgresql://movie:dk-secret@127.0.0.1:{port}/movies?client_encoding=utf8"


def _compose_view(project: str) -> list[str]:
    import docker

    client = docker.from_env()
    try:
        found = client.containers.list(
            ignore_removed=True,
            filters={
                "label": [
                    f"com.docker.compose.project={project}",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        return [c.name for c in found]
    finally:
        client.close()


def _compose_clients() -> list[list[str]]:
    """Compose v2 (`docker compose`) and v1 (`docker-compose`); CI installs both."""
    found = []
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        found.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        found.append([shutil.which("docker-compose") or "docker-compose"])
    if len(found) < 2 and os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
        pytest.fail(f"MOVIECTL_REQUIRE_DOCKER=1 but only {found} of the two Compose clients exist")
    return found


def _compose_ps(client: list[str], project: str, env: dict[str, str]) -> list[str]:
    """Names of the containers `ps` shows for ``project`` with the shipped compose file."""
    from moviectl.core.servers.compose import compose_path

    compose_file = str(compose_path(Path("compose/docker-compose.yml")))
    res = subprocess.run(
        [*client, "-p", project, "-f", compose_file, "ps", "-q"],
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return [_container_name(cid) for cid in res.stdout.split()]


def _container_name(cid: str) -> str:
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.Name}}", cid], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip().lstrip("/")


def test_up_down_up_keeps_data_and_compose_sees_the_container(dk):
    r = dk("db", "up", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["backend"] == "docker" and not doc["already_running"]
    assert "dk-secret" not in r.output
    project = dk.env["MOVIE_COMPOSE_PROJECT"]
    assert _compose_view(project) == [f"{project}-db-1"]
    for client in _compose_clients():  # the real clients list what moviectl made
        assert _compose_ps(client, project, dk.env) == [f"{project}-db-1"], client

    with psycopg.connect(_url(dk), autocommit=True) as c:
        c.execute("CREATE TABLE keep (v text)")
        c.execute("INSERT INTO keep VALUES ('docker data')")
    assert json.loads(dk("db", "up", "--json").stdout)["already_running"] is True
    r = dk("db", "status", "--json")
    assert json.loads(r.stdout)["state"] == "running"
    assert "ready to accept connections" in dk("db", "logs", "--tail", "20").stdout

    assert dk("db", "down").exit_code == 0
    assert _compose_view(project) == []
    for client in _compose_clients():
        assert _compose_ps(client, project, dk.env) == [], client
    assert dk("db", "status").exit_code == 3
    assert dk("db", "up").exit_code == 0
    with psycopg.connect(_url(dk)) as c:
        assert c.execute("SELECT v FROM keep").fetchone()[0] == "docker data"


def test_port_clash(dk):
    port = int(dk.env["MOVIE_DB_PORT"])
    with occupied(port):
        r = dk("db", "up")
    assert r.exit_code == 8 and f"port {port}" in r.stderr and "MOVIE_DB_PORT" in r.stderr


def test_image_that_cannot_be_pulled(dk):
    r = dk("db", "up", MOVIE_DB_IMAGE="localhost:1/no-such/postgres:0")
    assert r.exit_code == 8, r.output
    assert "cannot pull the image localhost:1/no-such/postgres:0" in r.stderr
    assert "MOVIE_DB_IMAGE" in r.stderr


def test_container_exiting_during_start_shows_its_log(dk, tmp_path):
    from pathlib import Path

    from moviectl.core.servers.compose import compose_path

    text = compose_path(Path("compose/docker-compose.yml")).read_text()
    broken = tmp_path / "docker-compose.yml"
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/postgres-password" in text
    broken.write_text(text.replace("POSTGRES_PASSWORD_FILE: /run/secrets/postgres-password", ""))
    r = dk("db", "up", "--timeout", "30", MOVIE_COMPOSE_FILE=str(broken))
    assert r.exit_code == 8, r.output
    assert "exited during start" in r.stderr
    assert "POSTGRES_PASSWORD" in r.stderr  # the container's own last words


def test_two_concurrent_ups(dk):
    docs = run_at_once(dk.env, "db", "up")
    assert sorted(d["already_running"] for d in docs) == [False, True]


def test_auto_falls_back_to_embedded_when_the_image_cannot_be_had(image, tmp_path):
    cli = Cli(
        {
            "MOVIE_DB_BACKEND": "auto",
            "MOVIE_DB_IMAGE": "localhost:1/nope/postgres:0",
            "MOVIE_DB_PORT": str(free_port()),
            "MOVIE_DATA_DIR": str(tmp_path / "d"),
            "MOVIE_COMPOSE_PROJECT": f"mtest{secrets.token_hex(4)}",
        }
    )
    try:
        r = cli("db", "up", "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["backend"] == "embedded" and "cannot be had, so embedded" in doc["detail"]
        assert json.loads(cli("db", "status", "--json").stdout)["backend"] == "embedded"
    finally:
        cli("db", "down")


def test_backup_runs_pg_dump_in_the_container_when_no_host_one_fits(dk, tmp_path, monkeypatch):
    import moviectl.infra.pgtools as pgtools

    assert dk("db", "up").exit_code == 0
    assert dk("migrate").exit_code == 0
    assert dk("seed", "--sample", "50").exit_code == 0
    real = pgtools.candidates
    monkeypatch.setattr(
        pgtools, "candidates", lambda name, s: [] if name == "pg_dump" else real(name, s)
    )
    r = dk("backup", "--output", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["via"].startswith("docker exec ") and doc["manifest"]["row_counts"]["movies"] == 50
    assert "dk-secret" not in r.output
    r = dk("backup", "verify", doc["path"])
    assert r.exit_code == 0, r.output


def test_moviectl_up_on_docker_end_to_end(dk):
    r = dk("up", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["server"]["backend"] == "docker" and doc["movies"] == 3 and doc["health"]["ok"]
    assert doc["server"]["version"].startswith(("15", "16", "17", "18"))
    again = json.loads(dk("up", "--json").stdout)
    assert again["changed"] is False


def test_down_never_touches_what_moviectl_did_not_create(dk):
    """A foreign container with the same compose labels, its network and an unlabelled
    `<project>_pgdata` volume: `db down --volumes` refuses (5) and all three stay."""
    import docker

    project = dk.env["MOVIE_COMPOSE_PROJECT"]
    client = docker.from_env()
    net = client.networks.create(f"{project}_default")
    vol = client.volumes.create(f"{project}_pgdata")
    c = client.containers.create(
        dk.env["MOVIE_DB_IMAGE"],
        name=f"{project}-db-1",
        labels={
            "com.docker.compose.project": project,
            "com.docker.compose.service": "db",
            "com.docker.compose.oneoff": "False",
        },
        environment={"POSTGRES_PASSWORD": "theirs"},
        network=net.name,
    )
    try:
        r = dk("db", "down", "--volumes", "--yes")
        assert r.exit_code == 5, r.output
        assert "refusing" in r.stderr and "Traceback" not in r.output
        client.containers.get(c.id)
        client.networks.get(net.id)
        client.volumes.get(vol.name)
    finally:
        c.remove(force=True)
        net.remove()
        vol.remove()
        client.close()


def test_two_checkouts_with_the_same_project_do_not_share_or_delete(dk, tmp_path):
    assert dk("db", "up").exit_code == 0
    with psycopg.connect(_url(dk), autocommit=True) as c:
        c.execute("CREATE TABLE mine (v text)")
        c.execute("INSERT INTO mine VALUES ('checkout A')")
    other = Cli({**dk.env, "MOVIE_DATA_DIR": str(tmp_path / "other-checkout")})
    r = other("db", "up")
    assert r.exit_code == 5 and "another moviectl checkout" in r.stderr, r.output
    r = other("db", "down", "--volumes", "--yes")
    assert r.exit_code == 5, r.output
    with psycopg.connect(_url(dk)) as c:
        assert c.execute("SELECT v FROM mine").fetchone()[0] == "checkout A"


def test_docker_inspect_shows_no_password(dk):
    """The container reads its password from a 0600 file (POSTGRES_PASSWORD_FILE)."""
    import docker

    assert dk("db", "up").exit_code == 0
    client = docker.from_env()
    try:
        c = client.containers.get(f"{dk.env['MOVIE_COMPOSE_PROJECT']}-db-1")
        inspected = json.dumps(c.attrs)
    finally:
        client.close()
    assert "dk-secret" not in inspected
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/postgres-password" in c.attrs["Config"]["Env"]
    secret = next(Path(dk.env["MOVIE_DATA_DIR"]).glob("secrets/*postgres-password"))
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    with psycopg.connect(_url(dk)) as conn:  # the password in the file is the one that works
        assert conn.execute("select 1").fetchone()[0] == 1


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_backups_of_the_postgres_15_container_are_read_by_its_own_tools(dk, tmp_path, fmt):
    """Dumped with the server's own major (the container's pg_dump, or a host 15): the
    container's own pg_restore lists a custom backup, and both formats pass the drill."""
    assert dk("db", "up").exit_code == 0
    assert dk("migrate").exit_code == 0 and dk("seed", "--sample", "50").exit_code == 0
    r = dk("backup", "--output", str(tmp_path), "--format", fmt, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["manifest"]["pg_dump_version"].startswith("15") and doc["manifest"]["note"] is None
    if fmt == "custom":
        name = f"{dk.env['MOVIE_COMPOSE_PROJECT']}-db-1"
        with open(doc["path"], "rb") as fh:
            listed = subprocess.run(
                ["docker", "exec", "-i", name, "pg_restore", "--list"],
                stdin=fh,
                capture_output=True,
                timeout=60,
            )
        assert listed.returncode == 0, listed.stderr
        assert b"TABLE DATA public movies" in listed.stdout
        assert doc["manifest"]["pg_restore_min_major"] == 15
    r = dk("backup", "verify", doc["path"])
    assert r.exit_code == 0, r.output


def _compose(client: list[str], project: str, env: dict[str, str], *args: str):
    from moviectl.core.servers.compose import compose_path

    compose_file = str(compose_path(Path("compose/docker-compose.yml")))
    return subprocess.run(
        [*client, "-p", project, "-f", compose_file, *args],
        capture_output=True,
        text=True,
        env=subprocess_env(**env),
        timeout=180,
    )


def _compose_env(dk) -> dict[str, str]:
    """What Compose needs to interpolate the file as moviectl does (the password as a file)."""
    project = dk.env["MOVIE_COMPOSE_PROJECT"]
    secret = Path(dk.env["MOVIE_DATA_DIR"]).resolve() / "secrets" / f"{project}-postgres-password"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(dk.env["MOVIE_DB_PASSWORD"])
    secret.chmod(0o600)
    return {**dk.env, "MOVIE_DB_PASSWORD_FILE": str(secret)}


@pytest.mark.parametrize("client", ["v2", "v1"])
def test_compose_clients_use_a_moviectl_database_and_moviectl_adopts_theirs(dk, client):
    found = {("v2" if c[0] == "docker" else "v1"): c for c in _compose_clients()}
    if client not in found:
        pytest.skip(f"Compose {client} is not installed")
    cmd, project, env = found[client], dk.env["MOVIE_COMPOSE_PROJECT"], _compose_env(dk)
    try:
        assert dk("db", "up").exit_code == 0
        with psycopg.connect(_url(dk), autocommit=True) as c:
            c.execute("CREATE TABLE kept (v text)")
            c.execute("INSERT INTO kept VALUES ('made by moviectl')")
        logs = _compose(cmd, project, env, "logs", "db")
        assert logs.returncode == 0 and "database system is ready" in logs.stdout, logs.stderr
        up = _compose(cmd, project, env, "up", "-d", "db")
        assert up.returncode == 0, up.stderr
        r = dk("db", "up", "--json")  # adopts whatever Compose left running
        assert r.exit_code == 0, r.output
        with psycopg.connect(_url(dk)) as c:
            assert c.execute("SELECT v FROM kept").fetchone()[0] == "made by moviectl"
        assert dk("db", "status").exit_code == 0
        down = _compose(cmd, project, env, "down")
        assert down.returncode == 0, down.stderr
        assert _compose_ps(cmd, project, env) == []
        assert dk("db", "up").exit_code == 0  # the volume stayed: the data too
        with psycopg.connect(_url(dk)) as c:
            assert c.execute("SELECT v FROM kept").fetchone()[0] == "made by moviectl"
    finally:
        _compose(cmd, project, env, "down", "-v")


def test_a_container_made_with_another_port_is_recreated_keeping_the_data(dk):
    assert dk("db", "up").exit_code == 0
    with psycopg.connect(_url(dk), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('before the move')")
    old, new = dk.env["MOVIE_DB_PORT"], str(free_port())
    moved = Cli({**dk.env, "MOVIE_DB_PORT": new})
    r = moved("db", "status", "--json")  # facts from the container it found
    assert json.loads(r.stdout)["port"] == int(old) and "recreates it" in r.stdout, r.output
    started = time.monotonic()
    r = moved("db", "up", "--json")
    assert r.exit_code == 0, r.output
    assert "recreated" in json.loads(r.stdout)["detail"] and time.monotonic() - started < 60
    dk.env["MOVIE_DB_PORT"] = new  # the fixture's teardown follows the move
    with psycopg.connect(_url(dk)) as c:
        assert c.execute("SELECT v FROM kept").fetchone()[0] == "before the move"


def test_a_container_made_for_another_user_is_refused_with_the_way_out(dk):
    assert dk("db", "up").exit_code == 0
    r = Cli({**dk.env, "MOVIE_DB_USER": "someone_else"})("db", "up", "--timeout", "5")
    assert r.exit_code == 5, r.output
    assert "MOVIE_DB_USER=movie" in r.stderr and "db down --volumes" in r.stderr
    with psycopg.connect(_url(dk)) as c:  # nothing changed
        assert c.execute("select 1").fetchone()[0] == 1
