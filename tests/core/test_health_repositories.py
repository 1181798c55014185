"""Health and metrics know the backup repositories (issue 27): per repository the newest
backup and the newest verified one; a repository that is down or stalled is a warning in
`health` within a bound, a 0 in /metrics (promtool accepts the body), and exit 3 for
`backup`, before anything is written. A real SeaweedFS, stopped (SIGSTOP) to stall it."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import read_until, subprocess_env
from tests.core.s3server import SECRET_KEY, SeaweedS3
from tests.core.test_health_probes import _promtool
from tests.ports import free_port


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def seeded(cli, s3, tmp_path):
    r = cli("seed", "--sample", "100")
    assert r.exit_code == 0, r.output
    cli.env.update(s3.env(MOVIE_BACKUP_DIR=str(tmp_path / "staging"), MOVIE_CONNECT_TIMEOUT="2"))
    return cli


def backups_check(r) -> dict:  # type: ignore[no-untyped-def]
    doc = json.loads(r.stdout)
    return next(c for c in doc["checks"] if c["name"] == "backups")


def test_health_reports_each_repository(seeded, tmp_path):
    local = tmp_path / "local"
    repos = f"{local},s3://backups/h-{tmp_path.name}"
    r = seeded("health", "--json", MOVIE_BACKUP_REPO=repos)
    assert r.exit_code == 1, r.output  # the directory does not exist yet: a warning
    check = backups_check(r)
    assert check["status"] == "warn" and "does not exist" in check["detail"]
    assert json.loads(r.stdout)["status"] == "degraded"

    r = seeded("backup", "--json", MOVIE_BACKUP_REPO=repos)
    assert r.exit_code == 0, r.output
    name = Path(json.loads(r.stdout)["path"]).name
    r = seeded("health", "--json", MOVIE_BACKUP_REPO=repos)
    assert r.exit_code == 0, r.output
    check = backups_check(r)
    assert check["status"] == "pass"
    found = check["data"]["repositories"]
    assert [f["repository"] for f in found] == repos.split(",")
    assert all(f["up"] and f["backups"] == 1 and f["last"] > 0 for f in found)
    assert all(f["last_verified"] == 0 and f["last_verified_age_seconds"] is None for f in found)
    assert all(0 <= f["last_backup_age_seconds"] < 600 for f in found)

    r = seeded("backup", "verify", name, "--repo", repos.split(",")[1])
    assert r.exit_code == 0, r.output
    r = seeded("health", "--json", MOVIE_BACKUP_REPO=repos)
    local_f, s3_f = backups_check(r)["data"]["repositories"]
    assert s3_f["last_verified"] > 0 and local_f["last_verified"] == 0
    r = seeded("health", MOVIE_BACKUP_REPO=repos)  # the text form names both
    assert "backups" in r.stdout and "1 backups" in r.stdout
    # a selection of checks leaves the repositories out
    r = seeded("health", "--ready", "--json", MOVIE_BACKUP_REPO=repos)
    assert "backups" not in [c["name"] for c in json.loads(r.stdout)["checks"]]


def test_a_stalled_or_dead_repository_is_a_bounded_warning(seeded, s3, tmp_path):
    repos = f"{tmp_path},s3://backups/stall-{tmp_path.name}"
    s3.pause()
    try:
        t0 = time.monotonic()
        r = seeded("health", "--json", MOVIE_BACKUP_REPO=repos)
        took = time.monotonic() - t0
    finally:
        s3.resume()
    assert r.exit_code == 1, r.output
    check = backups_check(r)
    assert check["status"] == "warn" and "unreachable" in check["detail"], check
    assert took < 20, took  # the bound: twice MOVIE_CONNECT_TIMEOUT, plus the checks
    assert [f["up"] for f in check["data"]["repositories"]] == [True, False]
    local_f, s3_f = check["data"]["repositories"]  # a stalled bucket's uploads: not counted
    assert local_f["incomplete_uploads"] is None and local_f["uploads_unchecked"] is None
    assert s3_f["incomplete_uploads"] is None and "not checked" in s3_f["uploads_unchecked"]
    assert SECRET_KEY not in r.output

    dead = f"http://127.0.0.1:{free_port()}"
    r = seeded("health", "--json", MOVIE_BACKUP_REPO=repos, AWS_ENDPOINT_URL=dead)
    check = backups_check(r)
    assert check["status"] == "warn" and dead in check["detail"]

    # `backup` to both: exit 3 before pg_dump, nothing written to the first
    out = tmp_path / "first"
    before = set(tmp_path.iterdir())
    r = seeded("backup", MOVIE_BACKUP_REPO=f"{out},s3://backups/x", AWS_ENDPOINT_URL=dead)
    assert r.exit_code == 3 and dead in r.stderr and len(r.stderr.splitlines()) <= 2
    assert set(tmp_path.iterdir()) - before <= {out} and not (out.exists() and list(out.iterdir()))


def _serve(env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", "health", "--serve", str(port)],
        env=subprocess_env(MOVIE_PROBE_DEADLINE="5", **env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        said = read_until(proc.stderr, "serving", timeout=30)
        assert "serving" in said, said
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _metrics(port: int) -> bytes:
    deadline = time.monotonic() + 30
    while True:  # the first scrape may come before the repositories' first read
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read()
        conn.close()
        if b"moviectl_backup_repository_up" in body or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


def test_metrics_per_repository(seeded, s3, tmp_path):
    promtool = _promtool()
    repo = f"s3://backups/m-{tmp_path.name}"
    r = seeded("backup", "--to", repo)
    assert r.exit_code == 0, r.output
    env = dict(seeded.env, MOVIE_BACKUP_REPO=f"{repo},{tmp_path / 'nowhere'}")
    for port in _serve(env):
        body = _metrics(port)
    text = body.decode()
    assert f'moviectl_backup_repository_up{{repository="{repo}"}} 1.0' in text, text
    assert f'moviectl_backup_repository_backups{{repository="{repo}"}} 1.0' in text
    assert f'moviectl_backup_repository_up{{repository="{tmp_path / "nowhere"}"}} 0.0' in text
    line = next(
        ln for ln in text.splitlines() if ln.startswith("moviectl_backup_repository_last_backup")
    )
    assert float(line.split()[-1]) > time.time() - 600
    assert SECRET_KEY not in text
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", checked


@pytest.mark.parametrize(
    "spec",
    ["s3://AKIA:hunter2secret@bucket/x", "s3://bucket/x?k=hunter2secret", "s3://[hunter2secret"],
)
def test_a_credential_in_the_repository_url_never_shows(spec):
    from tests.conftest import Cli

    for args in (("backup", "list", "--json"), ("health", "--json")):
        r = Cli({"MOVIE_BACKUP_REPO": spec, "MOVIE_DB_PORT": str(free_port("127.0.0.1"))})(*args)
        assert "hunter2secret" not in r.output, args
        assert "bad repository URL" in r.output and "Traceback" not in r.output, r.output
        json.loads(r.stdout)  # one document, the error included
    r = Cli({"MOVIE_BACKUP_REPO": spec})("config", "show", "--json")
    assert r.exit_code == 0 and "hunter2secret" not in r.output, r.output


@pytest.mark.timeout(300)
def test_leftover_uploads_are_a_warning_until_prune_aborts_them(seeded, s3, tmp_path):
    """A real unfinished multipart upload whose backup's process is gone (what kill -9 of
    `backup --to s3://` leaves): `health` (text, --json, /metrics) and `doctor` report its
    count and age with the command that aborts it; after that command, nothing is left.
    A young upload nobody owns (another tool's, maybe in flight) is counted, not warned."""
    from tests.core.test_backups_s3_uploads import orphan_upload
    from tests.core.test_backups_s3_uploads_hostile import dead_pid

    prefix = f"lu-{tmp_path.name}"
    repo = f"s3://backups/{prefix}"
    env = {"MOVIE_BACKUP_REPO": repo}
    r = seeded("backup", "--to", repo)  # one real backup, which --uploads-only must keep
    assert r.exit_code == 0, r.output
    r = seeded("health", "--json", **env)
    (f,) = backups_check(r)["data"]["repositories"]
    assert r.exit_code == 0 and (f["incomplete_uploads"], f["leftover_uploads"]) == (0, 0), f

    name = "movies-20261202T000000Z-abcdef.dump"
    orphan_upload(s3, f"{prefix}/{name}")
    s3.write(
        f"{prefix}/{name}.inprogress",
        json.dumps({"pid": dead_pid(), "host": socket.gethostname()}).encode(),
    )
    orphan_upload(s3, f"{prefix}/other-tool.bin")  # seconds old, no owner: not judged yet
    fix = f"moviectl backup prune --uploads-only --repo {repo}"

    r = seeded("health", "--json", **env)
    assert r.exit_code == 1, r.output
    assert json.loads(r.stdout)["status"] == "degraded"
    check = backups_check(r)
    assert check["status"] == "warn", check
    assert "1 incomplete multipart upload left behind" in check["detail"], check
    assert f"`{fix}` aborts it" in check["detail"] and "1 backups" in check["detail"]
    (f,) = check["data"]["repositories"]
    assert f["up"] and f["uploads_unchecked"] is None
    assert (f["incomplete_uploads"], f["leftover_uploads"], f["abortable_uploads"]) == (2, 1, 1)
    assert 0 <= f["oldest_leftover_upload_age_seconds"] < 600
    assert f["oldest_upload"] <= f["oldest_leftover_upload"] <= time.time()
    assert SECRET_KEY not in r.output
    r = seeded("health", **env)  # the text form: one line, the count, the age, the fix
    (line,) = [ln for ln in r.stdout.splitlines() if " backups " in ln]
    assert "! backups" in line and "the oldest began" in line and fix in line, r.stdout
    r = seeded("doctor", "--json", **env)
    found = {x["name"]: x for x in json.loads(r.stdout)["findings"]}["leftover uploads"]
    assert found["status"] == "warn" and "1 for `backup prune` to abort" in found["detail"]
    assert fix in found["fix"] and SECRET_KEY not in r.output
    r = seeded("doctor", "--json", MOVIE_BACKUP_REPO=f"{tmp_path / 'first'},{repo}")
    found = {x["name"]: x for x in json.loads(r.stdout)["findings"]}["leftover uploads"]
    assert found["status"] == "warn" and repo in found["detail"], found  # the second one too

    port_env = dict(seeded.env, **env)
    for port in _serve(port_env):
        text = _metrics(port).decode()
    for series, value in (
        ("incomplete_uploads", 2.0),
        ("leftover_uploads", 1.0),
    ):
        assert f'moviectl_backup_repository_{series}{{repository="{repo}"}} {value}' in text
    oldest = next(
        ln for ln in text.splitlines() if ln.startswith("moviectl_backup_repository_oldest")
    )
    assert time.time() - 600 < float(oldest.split()[-1]) <= time.time(), oldest

    r = seeded("backup", "prune", "--uploads-only", "--keep-last", "1", "--repo", repo)
    assert r.exit_code == 2 and "no retention policy" in r.output, r.output
    r = seeded("backup", "prune", "--uploads-only", "--repo", repo, "--dry-run", "--json")
    assert r.exit_code == 0 and len(s3.multipart_uploads(prefix + "/")) == 2, r.output
    r = seeded(*fix.split()[1:], "--yes", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["uploads_only"] and doc["deleted"] == [] and doc["decisions"] == []
    acts = {u["key"]: u["action"] for u in doc["leftover_uploads"]}
    assert acts == {name: "aborted", "other-tool.bin": "kept"}, acts
    assert [u["Key"] for u in s3.multipart_uploads(prefix + "/")] == [f"{prefix}/other-tool.bin"]

    r = seeded("health", "--json", **env)
    check = backups_check(r)
    assert r.exit_code == 0 and check["status"] == "pass", check
    (f,) = check["data"]["repositories"]
    assert (f["incomplete_uploads"], f["leftover_uploads"], f["backups"]) == (1, 0, 1)
    assert "1 unfinished upload running or too young to judge" in check["detail"]
    r = seeded("doctor", "--json", **env)
    found = {x["name"]: x for x in json.loads(r.stdout)["findings"]}["leftover uploads"]
    assert found["status"] == "ok", found
