"""The shipped compose file run by hand with the real Compose v1 and v2 clients: from a fresh
checkout and after `moviectl db up`, with no MOVIE_DB_PASSWORD_FILE exported; a failed
recreate never leaves the database stopped where moviectl can prevent it, and `doctor` says
what it finds."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

import docker
import psycopg
import pytest

from tests.conftest import Cli, run_moviectl, subprocess_env, wait_for
from tests.ports import free_port

pytestmark = pytest.mark.docker
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def image() -> str:
    from moviectl.core.servers.docker_engine import engine_answers

    required = os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1"
    if not engine_answers():
        if required:
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but no Docker engine answers")
        pytest.skip("no Docker engine (set MOVIECTL_REQUIRE_DOCKER=1 to fail instead)")
    img = os.environ.get("MOVIE_DB_IMAGE")
    if not img:
        if required:
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but MOVIE_DB_IMAGE is not set")
        pytest.skip("MOVIE_DB_IMAGE not set (../shared/ci/docker-postgres prints one)")
    return img


def _client(which: str) -> list[str]:
    if which == "v2":
        ok = subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        cmd = ["docker", "compose"] if ok else None
    else:
        found = shutil.which("docker-compose")
        cmd = [found] if found else None
    if cmd is None:
        if os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"MOVIECTL_REQUIRE_DOCKER=1 but Compose {which} is not installed")
        pytest.skip(f"Compose {which} is not installed")
    return cmd


class ByHand:
    """One project: the CLI's settings and the same compose file run by a real client."""

    def __init__(self, image: str, tmp: Path, client: list[str], compose_file: Path) -> None:
        self.project = f"mhand{secrets.token_hex(4)}"
        self.port = str(free_port())
        self.client, self.file = client, compose_file
        self.env = {
            "MOVIE_DB_BACKEND": "docker",
            "MOVIE_DB_IMAGE": image,
            "MOVIE_DB_PORT": self.port,
            "MOVIE_COMPOSE_PROJECT": self.project,
            "MOVIE_COMPOSE_FILE": str(compose_file),
            "MOVIE_DATA_DIR": str(tmp / "data"),
        }

    def cli(self, *args: str, **extra: str) -> Cli:
        return Cli({**self.env, **extra})(*args)

    def compose(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """By hand: what a shell with the image and port chosen has (no password file)."""
        env = subprocess_env(MOVIE_DB_IMAGE=self.env["MOVIE_DB_IMAGE"], MOVIE_DB_PORT=self.port)
        return subprocess.run(
            [*self.client, "-p", self.project, "-f", str(self.file), *args],
            capture_output=True,
            text=True,
            env={**env, **extra},
            timeout=240,
        )

    def url(self, password: str) -> str:
        return f"postgresql://movie:{password}@127.0.0.1:{self.port}/movies?client_encoding=utf8"

    def containers(self) -> list[tuple[str, str]]:
        client = docker.from_env()
        try:
            found = client.containers.list(
                ignore_removed=True,
                all=True,
                filters={"label": f"com.docker.compose.project={self.project}"},
            )
            return [(c.name, c.status) for c in found]
        finally:
            client.close()

    def remove_all(self) -> None:
        self.compose("down", "-v")
        client = docker.from_env()
        try:
            label = f"com.docker.compose.project={self.project}"
            for c in client.containers.list(
                ignore_removed=True, all=True, filters={"label": label}
            ):
                c.remove(force=True)
            for v in client.volumes.list(filters={"label": label}):
                v.remove(force=True)
        finally:
            client.close()


def _doctor(hand: ByHand) -> dict[str, dict[str, str]]:
    r = hand.cli("doctor", "--json")
    return {f["name"]: f for f in json.loads(r.stdout)["findings"]}


@pytest.fixture(params=["v2", "v1"])
def fresh(request, image, tmp_path):
    """A fresh checkout: the compose directory's tracked files, nothing else."""
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "compose"], capture_output=True, text=True
    ).stdout.split()
    assert "compose/postgres-password.default" in tracked
    for name in tracked:
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, checkout / name)
    hand = ByHand(image, tmp_path, _client(request.param), checkout / "compose/docker-compose.yml")
    yield hand
    hand.remove_all()


@pytest.fixture(params=["v2", "v1"])
def after_up(request, image, tmp_path):
    """The repository's compose file, a database `moviectl db up` made with its own password."""
    hand = ByHand(image, tmp_path, _client(request.param), REPO / "compose/docker-compose.yml")
    hand.env["MOVIE_DB_PASSWORD"] = "hand-secret"
    yield hand
    hand.remove_all()


def test_a_fresh_checkout_starts_by_hand_and_moviectl_uses_it(fresh):
    up = fresh.compose("up", "-d", "db")
    assert up.returncode == 0, up.stderr
    r = fresh.cli("db", "up", "--json", "--timeout", "120")  # adopts it, default password
    assert r.exit_code == 0, r.output
    with psycopg.connect(fresh.url("movie")) as c:
        assert c.execute("select current_user").fetchone()[0] == "movie"
    found = _doctor(fresh)
    assert found["compose"]["status"] == "ok", found["compose"]
    assert "postgres-password.default" in found["compose"]["detail"]
    assert found["container"]["status"] == "ok", found["container"]


def test_by_hand_after_moviectl_db_up_needs_no_exported_variable(after_up):
    assert after_up.cli("db", "up").exit_code == 0
    with psycopg.connect(after_up.url("hand-secret"), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('made by moviectl')")
    up = after_up.compose("up", "-d", "db")  # recreates it (its own labels); volume stays
    assert up.returncode == 0, up.stderr
    assert after_up.cli("db", "up", "--timeout", "120").exit_code == 0
    with psycopg.connect(after_up.url("hand-secret")) as c:
        assert c.execute("SELECT v FROM kept").fetchone()[0] == "made by moviectl"
    found = _doctor(after_up)  # by hand, a new volume would get the shipped default password
    assert found["compose"]["status"] == "warn", found["compose"]
    assert "another password" in found["compose"]["detail"]
    assert "MOVIE_DB_PASSWORD_FILE=" in found["compose"]["fix"]
    assert "hand-secret" not in json.dumps(found)
    assert found["container"]["status"] == "ok"


def test_a_failed_recreate_by_hand_is_found_and_undone(after_up, monkeypatch):
    """Compose v1 stops the container and renames it aside when the recreate fails (v2 keeps
    it running): doctor says so, and `moviectl db up` starts it again with its data."""
    assert after_up.cli("db", "up").exit_code == 0
    with psycopg.connect(after_up.url("hand-secret"), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('survives')")
    missing = str(after_up.env["MOVIE_DATA_DIR"]) + "/no-such-password-file"
    up = after_up.compose("up", "-d", "db", MOVIE_DB_PASSWORD_FILE=missing)
    assert up.returncode != 0 and "no-such-password-file" in up.stderr + up.stdout
    with monkeypatch.context() as m:  # the shell's variable, as Compose saw it
        m.setenv("MOVIE_DB_PASSWORD_FILE", missing)
        found = _doctor(after_up)
    assert found["compose"]["status"] == "warn" and "is missing" in found["compose"]["detail"]
    [(name, status)] = after_up.containers()
    if after_up.client[0] == "docker":  # v2 creates the new one first: the old one runs
        assert status == "running", (name, status)
    else:
        assert status == "exited", (name, status)
        assert found["container"]["status"] == "warn", found["container"]
        assert "renamed it aside" in found["container"]["detail"]
        assert "moviectl db up" in found["container"]["fix"]
    r = after_up.cli("db", "up", "--json", "--timeout", "120")
    assert r.exit_code == 0, r.output
    with psycopg.connect(after_up.url("hand-secret")) as c:
        assert c.execute("SELECT v FROM kept").fetchone()[0] == "survives"
    assert _doctor(after_up)["container"]["status"] == "ok"


@pytest.fixture
def mine(image, tmp_path):
    hand = ByHand(image, tmp_path, _client("v2"), REPO / "compose/docker-compose.yml")
    hand.env["MOVIE_DB_PASSWORD"] = "mine-secret"
    yield hand
    hand.remove_all()


def _kept(hand: ByHand) -> str | None:
    """The row in ``kept``, once the put-back server accepts logins (bounded: 60 s): a
    killed run's `db up` put it back without waiting in between."""
    seen: list[str] = []

    def read() -> bool:
        try:
            with psycopg.connect(hand.url("mine-secret"), connect_timeout=5) as c:
                row = c.execute("SELECT v FROM kept").fetchone()
        except psycopg.OperationalError:  # still starting
            return False
        seen.append(row[0] if row else "")
        return True

    assert wait_for(read, 60), "the put-back server never accepted a login"
    return seen[0]


def test_moviectls_own_recreate_that_cannot_happen_leaves_the_database_running(mine):
    """An image that cannot be had: refused before the old container is touched (it used to
    be stopped and removed first, leaving no database)."""
    assert mine.cli("db", "up").exit_code == 0
    r = mine.cli("db", "up", "--timeout", "10", MOVIE_DB_IMAGE="localhost/no-such-image:0")
    assert r.exit_code != 0 and "no-such-image" in r.stderr, r.output
    [(name, status)] = mine.containers()
    assert (name, status) == (f"{mine.project}-db-1", "running")
    with psycopg.connect(mine.url("mine-secret")) as c:
        assert c.execute("select 1").fetchone()[0] == 1


def test_a_container_a_killed_recreate_left_aside_is_put_back(mine):
    """moviectl renames the old container aside while the new one starts; killed right
    then, the next `db up` puts the old one back and starts it, data and all."""
    assert mine.cli("db", "up").exit_code == 0
    with psycopg.connect(mine.url("mine-secret"), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('aside')")
    client = docker.from_env()
    try:
        c = client.containers.get(f"{mine.project}-db-1")
        c.stop(timeout=10)
        c.rename(f"{mine.project}-db-1-replaced")
    finally:
        client.close()
    r = mine.cli("db", "up", "--json", "--timeout", "120")
    assert r.exit_code == 0, r.output
    assert mine.containers() == [(f"{mine.project}-db-1", "running")]
    with psycopg.connect(mine.url("mine-secret")) as c:
        assert c.execute("SELECT v FROM kept").fetchone()[0] == "aside"


def test_a_recreate_whose_new_container_fails_to_start_puts_the_old_one_back(mine, monkeypatch):
    """The new container failing to start (injected: the engine refuses it) removes it and
    starts the old one again under its own name, on its old port, data and all."""
    from moviectl.core.servers.docker import DockerBackend
    from moviectl.infra.errors import ServerError

    assert mine.cli("db", "up").exit_code == 0
    with psycopg.connect(mine.url("mine-secret"), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('put back')")

    def refuse(self: DockerBackend, c: object) -> None:
        raise ServerError("the db container did not start: injected")

    monkeypatch.setattr(DockerBackend, "_start", refuse)
    r = mine.cli("db", "up", "--timeout", "10", MOVIE_DB_PORT=str(free_port()))
    assert r.exit_code == 8 and "injected" in r.stderr, r.output
    monkeypatch.undo()
    assert mine.containers() == [(f"{mine.project}-db-1", "running")]
    # `db up` returned once the old one accepts logins: the very next command works
    with psycopg.connect(mine.url("mine-secret"), connect_timeout=5) as c:
        assert c.execute("SELECT v FROM kept").fetchone() == ("put back",)


_KILLED_BEFORE_START = """
import os, signal
from moviectl.core.servers import docker as d
start = d.DockerBackend._start
def _start(self, c):  # kill -9 with the old container aside and the new one made
    if self.client.containers.list(ignore_removed=True, all=True, filters={"name": self._aside}):
        os.kill(os.getpid(), signal.SIGKILL)
    start(self, c)
d.DockerBackend._start = _start
from moviectl.cli.entry import main
main()
"""


def test_a_recreate_killed_before_the_new_container_started_puts_the_old_one_back(mine):
    """kill -9 between the new container's create and its start; the next `db up` cannot
    start the new one (its port was taken meanwhile): the old one, data and all, runs again
    instead of being deleted for a container that never ran."""
    assert mine.cli("db", "up").exit_code == 0
    with psycopg.connect(mine.url("mine-secret"), autocommit=True) as c:
        c.execute("CREATE TABLE kept (v text)")
        c.execute("INSERT INTO kept VALUES ('never lost')")
    new_port = free_port()
    env = subprocess_env(**{**mine.env, "MOVIE_DB_PORT": str(new_port)})
    killed = run_moviectl(env, "db", "up", "--timeout", "60", python=_KILLED_BEFORE_START)
    assert killed.returncode == -9, killed.stderr
    assert sorted(s for _, s in mine.containers()) == ["created", "exited"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", new_port))
        taken.listen()
        r = mine.cli("db", "up", "--timeout", "60", MOVIE_DB_PORT=str(new_port))
    assert r.exit_code == 8 and "already in use" in r.stderr, r.output
    assert mine.containers() == [(f"{mine.project}-db-1", "running")]
    assert _kept(mine) == "never lost"  # the old port, the old data
