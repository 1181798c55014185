from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from moviectl.infra.settings import load_settings
from tests.conftest import Cli, occupied, read_until, run_at_once, subprocess_env, wait_for
from tests.ports import free_port


def _url(cli: Cli) -> str:
    return f"postgresql://movie:emb-secret@127.0.0.1:{cli.env['MOVIE_DB_PORT']}/movies"


def _dead(pid: int) -> bool:
    """Is ``pid`` gone or a zombie? Init reaps the killed postmaster at any moment, so its
    /proc entry may vanish between two reads (ENOENT, or ESRCH mid-teardown): gone too."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def test_up_is_idempotent_and_data_survives_down_up(emb):
    r = emb("db", "up", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["backend"] == "embedded" and doc["already_running"] is False
    assert doc["version"].startswith("18") and "emb-secret" not in r.output
    with psycopg.connect(_url(emb), autocommit=True) as c:
        c.execute("CREATE TABLE keep (v text)")
        c.execute("INSERT INTO keep VALUES ('still here')")
    r = emb("db", "up", "--json")
    assert json.loads(r.stdout)["already_running"] is True

    assert emb("db", "down").exit_code == 0
    assert emb("db", "status").exit_code == 3
    assert emb("db", "up").exit_code == 0
    with psycopg.connect(_url(emb)) as c:
        assert c.execute("SELECT v FROM keep").fetchone()[0] == "still here"


def test_status_logs_and_shell(emb):
    assert emb("db", "up").exit_code == 0
    r = emb("db", "status", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 0 and doc["state"] == "running"
    assert doc["connections"] >= 1 and doc["data_size_bytes"] > 0 and doc["uptime_seconds"] >= 0
    r = emb("db", "logs", "--tail", "5")
    assert "ready to accept connections" in r.stdout
    env = subprocess_env(**emb.env)
    res = subprocess.run(
        [sys.executable, "-m", "moviectl", "db", "shell", "--psql"],
        input="SELECT 6 * 7 AS answer;",
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    assert "42" in res.stdout


def test_shell_never_puts_the_password_on_argv():
    from moviectl.core.shell import shell_command

    for psql in (False, True):
        argv, env = shell_command(
            load_settings(use_dotenv=False, db_password="argv-secret"), psql=psql
        )
        assert "argv-secret" not in " ".join(argv)
        assert env["PGPASSWORD"] == "argv-secret"


def test_port_taken_names_the_port(emb):
    port = int(emb.env["MOVIE_DB_PORT"])
    with occupied(port):
        r = emb("db", "up")
    assert r.exit_code == 8, r.output
    assert f"port {port}" in r.stderr and "MOVIE_DB_PORT" in r.stderr
    assert "Traceback" not in r.output
    assert not (Path(emb.env["MOVIE_DATA_DIR"]) / "pgdata").exists()  # no initdb in vain


def test_recovers_from_kill_9(emb, tmp_path):
    assert emb("db", "up").exit_code == 0
    with psycopg.connect(_url(emb), autocommit=True) as c:
        c.execute("CREATE TABLE crash (v int)")
        c.execute("INSERT INTO crash VALUES (1)")
    pidfile = tmp_path / "data" / "pgdata" / "postmaster.pid"
    pid = int(pidfile.read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: _dead(pid), 60), f"postmaster {pid} outlived SIGKILL"
    assert pidfile.exists()  # stale
    r = emb("db", "up")
    assert r.exit_code == 0, r.output
    with psycopg.connect(_url(emb)) as c:
        assert c.execute("SELECT v FROM crash").fetchone()[0] == 1


def test_refuses_a_data_dir_from_another_major(emb, tmp_path):
    assert emb("db", "up").exit_code == 0
    assert emb("db", "down").exit_code == 0
    (tmp_path / "data" / "pgdata" / "PG_VERSION").write_text("12\n")
    r = emb("db", "up")
    assert r.exit_code == 5  # refused, with the way on: issue 30's offer
    assert "PostgreSQL 12" in r.stderr and "PostgreSQL 18" in r.stderr
    assert "moviectl db upgrade --to 18 --dry-run" in r.stderr


def test_two_concurrent_ups_start_one_server(emb):
    docs = run_at_once(emb.env, "db", "up")
    assert sorted(d["already_running"] for d in docs) == [False, True]
    assert docs[0]["port"] == docs[1]["port"]


def test_external_backend_waits_and_refuses_down(movie_db_url):
    cli = Cli({"MOVIE_DATABASE_URL": movie_db_url, "MOVIE_DB_BACKEND": "external"})
    r = cli("db", "up", "--json", "--timeout", "5")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "external"
    r = cli("db", "down")
    assert r.exit_code == 5 and "does not manage" in r.stderr
    r = Cli({"MOVIE_DB_BACKEND": "external", "MOVIE_DB_PORT": "1"})("db", "up", "--timeout", "1")
    assert r.exit_code == 3 and "127.0.0.1:1" in r.stderr


def test_docker_backend_without_an_engine_says_so(tmp_path):
    cli = Cli({"MOVIE_DB_BACKEND": "docker", "DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    r = cli("db", "up")
    assert r.exit_code == 8
    assert "Docker engine is not reachable" in r.stderr and "MOVIE_DB_BACKEND=embedded" in r.stderr


def test_logs_follow_prints_new_lines(emb):
    assert emb("db", "up").exit_code == 0
    env = subprocess_env(**emb.env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", "db", "logs", "-f", "--tail", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        # the child says when it follows; only then is the marker written
        said = read_until(proc.stderr, "following", timeout=30)
        assert "following" in said, said
        with psycopg.connect(_url(emb), autocommit=True) as c:
            c.execute("DO $$ BEGIN RAISE LOG 'moviectl-follow-marker'; END $$")
        seen = read_until(proc.stdout, "moviectl-follow-marker", timeout=30)
        assert "moviectl-follow-marker" in seen
    finally:
        proc.kill()
        proc.wait()


def test_a_database_name_is_never_taken_for_an_option(moviectl_admin_target):
    """`db shell` with a database named `--version`: psql looks for that database."""
    from moviectl.core.shell import shell_command

    server = moviectl_admin_target.url(masked=False).rsplit("/", 1)[0]  # no database needed
    settings = load_settings(use_dotenv=False, database_url=server + "/--version")
    argv, env = shell_command(settings, psql=True)
    res = subprocess.run(
        [*argv, "-c", "select 1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert res.returncode != 0 and "psql (PostgreSQL)" not in res.stdout
    assert '"--version" does not exist' in res.stderr, res.stderr


def test_kill_9_during_initdb_leaves_no_half_cluster_and_no_password(emb, tmp_path):
    data = Path(emb.env["MOVIE_DATA_DIR"])
    cmd = [sys.executable, "-m", "moviectl", "db", "up"]
    proc = subprocess.Popen(cmd, env=subprocess_env(**emb.env), stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(data.glob(".initdb-*")):
            if proc.poll() is not None:
                break
            time.sleep(0.005)
        assert list(data.glob(".initdb-*")), "initdb finished before it could be killed"
        proc.kill()
    finally:
        proc.wait(timeout=30)
    assert not (data / "pgdata").exists()
    r = emb("db", "up", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["port"] == int(emb.env["MOVIE_DB_PORT"])
    assert list(data.glob(".initdb-*")) == []
    with psycopg.connect(_url(emb)) as c:
        assert c.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
    for f in data.rglob("*"):  # the password is in no file (pg_authid holds a SCRAM hash)
        if f.is_file():
            assert b"emb-secret" not in f.read_bytes(), f


def test_commands_find_the_project_from_a_subdirectory(emb, tmp_path):
    """As git does: run from docs/, moviectl finds the checkout's .env and its server."""
    env = dict(emb.env)
    (tmp_path / ".env").write_text(
        "".join(f"{k}={v}\n" for k, v in env.items() if k != "MOVIE_DATA_DIR")
        + "MOVIE_DATA_DIR=.moviectl\n"
    )
    here = Cli({})
    assert here("db", "up").exit_code == 0
    sub = tmp_path / "docs" / "deeper"
    sub.mkdir(parents=True)
    os.chdir(sub)
    try:
        r = here("db", "status", "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["state"] == "running"
        assert not (sub / ".moviectl").exists()
    finally:
        os.chdir(tmp_path)
        here("db", "down")


def test_auto_keeps_to_the_backend_that_holds_the_data(tmp_path):
    """A stopped embedded cluster with data wins over a Docker image in auto mode, and the
    choice is remembered under the data directory."""
    env = {
        "MOVIE_DB_BACKEND": "auto",
        "MOVIE_DB_PORT": str(free_port()),
        "MOVIE_DATA_DIR": str(tmp_path / "data"),
        "MOVIE_DB_PASSWORD": "auto-secret",
        "MOVIE_DB_IMAGE": os.environ.get("MOVIE_DB_IMAGE", "postgres:16"),
    }
    cli = Cli({**env, "MOVIE_DB_BACKEND": "embedded"})
    assert cli("db", "up").exit_code == 0
    assert cli("db", "down").exit_code == 0  # stopped, data kept, nothing remembered yet
    auto = Cli(env)
    r = auto("db", "up", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backend"] == "embedded"
    assert (tmp_path / "data" / "backend").read_text().strip() == "embedded"
    assert auto("db", "down").exit_code == 0


def test_the_server_environment_holds_no_secret(emb):
    """The postmaster (and every archive_command it runs) never inherits moviectl's
    settings or S3 keys: with moviectl as root it runs as another user."""
    r = emb("db", "up", AWS_SECRET_ACCESS_KEY="aws-emb-secret")
    assert r.exit_code == 0, r.output
    pid_file = Path(emb.env["MOVIE_DATA_DIR"]).rglob("postmaster.pid")
    pid = int(next(pid_file).read_text().splitlines()[0])
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert b"emb-secret" not in environ and b"MOVIE_" not in environ
