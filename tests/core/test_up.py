from __future__ import annotations

import json

import pytest

from tests.conftest import Cli, occupied
from tests.ports import free_port


@pytest.fixture
def env(tmp_path):
    cli = Cli(
        {
            "MOVIE_DB_BACKEND": "embedded",
            "MOVIE_DB_PORT": str(free_port()),
            "MOVIE_DATA_DIR": str(tmp_path / "data"),
        }
    )
    yield cli
    cli("down")


def test_up_twice_changes_nothing_the_second_time(env):
    r = env("up", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert first["changed"] is True and first["movies"] == 3
    assert first["seeded"]["inserted"] == 3 and first["migrate"]["to_revision"] == "0002"
    assert first["health"]["ok"] is True

    r = env("up", "--json")
    assert r.exit_code == 0, r.output
    second = json.loads(r.stdout)
    assert second["changed"] is False
    assert second["server"]["already_running"] is True
    assert second["migrate"]["steps"] == [] and second["seeded"] is None and second["movies"] == 3

    r = env("up")
    assert "nothing changed" in r.stdout and "moviectl up: ready" in r.stdout
    assert env("down").exit_code == 0
    assert env("db", "status").exit_code == 3


def test_up_with_the_port_taken(env):
    port = int(env.env["MOVIE_DB_PORT"])
    with occupied(port):
        r = env("up")
    assert r.exit_code == 8
    assert f"port {port} on 127.0.0.1 is already in use" in r.stderr
    assert "MOVIE_DB_PORT" in r.stderr and "Traceback" not in r.output


def test_doctor(env, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("MOVIE_DB_PROT=5433\n")
    monkeypatch.chdir(tmp_path)
    r = env("doctor", "--json")
    doc = json.loads(r.stdout)
    findings = {f["name"]: f for f in doc["findings"]}
    assert "MOVIE_DB_PROT" in findings[".env"]["detail"]
    assert r.exit_code == 1 and doc["warnings"] >= 1  # warnings are exit 1, as the table says
    assert findings["embedded"]["status"] == "ok"
    assert findings["pgcli"]["status"] == "ok"
    assert findings["port"]["status"] == "ok"
    env("up")
    r = env("doctor", "--json")
    findings = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
    assert findings["server"]["status"] == "ok" and findings["createdb"]["status"] == "ok"
    assert findings["pg_dump"]["status"] == "ok"
