"""Leftover multipart uploads, reported and aborted, against a bucket that misbehaves: a
stalled server (SIGSTOP), refused keys, a missing bucket. `backup prune --uploads-only`
has one job: when it cannot do it, it says so with the exit code any prune has, and a
stall mid-way does not cost one rclone timeout per upload. `doctor` counts every bucket
within the bound `health` has. No rclone is left behind. A real SeaweedFS and rclone."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import run_moviectl, start_moviectl, subprocess_env
from tests.core.s3server import SECRET_KEY, SeaweedS3
from tests.core.test_backups_s3_uploads import orphan_upload
from tests.core.test_backups_s3_uploads_hostile import dead_pid
from tests.ports import free_port


def env_of(s3: SeaweedS3, tmp_path: Path, **extra: str) -> dict[str, str]:
    """No database (its port is closed): the bucket's checks alone do work."""
    return subprocess_env(
        MOVIE_DATABASE_URL=f"postgresql://movie:pw@127.0.0.1:{free_port()}/movies",
        MOVIE_BACKUP_DIR=str(tmp_path / "staging"),
        MOVIE_CONNECT_TIMEOUT="2",
        MOVIE_STALL_TIMEOUT="5",
        **s3.env(**extra),
    )


def rclones(s3: SeaweedS3) -> list[int]:
    """The rclone processes moviectl started for this test's server (by its endpoint)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"rclone" in cmd and f"ENDPOINT={s3.endpoint}\0".encode() in env:
            found.append(int(proc.name))
    return found


def left_behind(s3: SeaweedS3, within: float = 10.0) -> list[int]:
    """The rclones still there ``within`` seconds after moviectl exited. One killed with
    moviectl (its death signal, or a kill not waited for on the way out of SIGTERM) may
    still be in /proc for a moment after moviectl's exit on a loaded machine."""
    deadline = time.monotonic() + within
    while (found := rclones(s3)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def cleaning(s3: SeaweedS3) -> bool:
    """Is one of those rclones aborting an upload (``cleanup``)? A listing rclone that
    ends between the scan and this read of its command line is passed over: it is not
    the one looked for (reading it unguarded failed the test with FileNotFoundError)."""
    for pid in rclones(s3):
        try:
            if b"cleanup" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def dead_run(s3: SeaweedS3, prefix: str, name: str) -> None:
    """An upload whose backup's process is gone (what kill -9 of `backup --to` leaves)."""
    orphan_upload(s3, f"{prefix}/{name}")
    owner = {"pid": dead_pid(), "host": socket.gethostname()}
    s3.write(f"{prefix}/{name}.inprogress", json.dumps(owner).encode())


def one_json(r) -> dict:  # type: ignore[no-untyped-def]
    assert SECRET_KEY not in r.stdout + r.stderr and "Traceback" not in r.stderr, r.stderr
    return dict(json.loads(r.stdout))  # exactly one document, an error's included


def test_uploads_only_that_cannot_look_fails_as_any_prune(s3, tmp_path):
    env = env_of(s3, tmp_path)
    prune = ("--json", "backup", "prune", "--uploads-only", "--yes", "--repo")
    bad = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-" + SECRET_KEY}
    r = run_moviectl(bad, *prune, "s3://backups/x")
    assert r.returncode == 4 and one_json(r)["exit_code"] == 4, r.stdout
    assert "wrong-" not in r.stdout + r.stderr
    r = run_moviectl(env, *prune, "s3://nosuchbucket/x")
    assert r.returncode == 2 and "does not exist" in one_json(r)["message"], r.stdout

    s3.pause()
    try:
        t0 = time.monotonic()
        r = run_moviectl(env, *prune, "s3://backups/x", timeout=180)
        took = time.monotonic() - t0
        left = left_behind(s3)
    finally:
        s3.resume()
    assert r.returncode == 3 and one_json(r)["exit_code"] == 3, r.stdout
    assert took < 30, took  # MOVIE_STALL_TIMEOUT per request, as any prune; not rclone's 4x
    assert left == []


@pytest.mark.timeout(300)
def test_a_bucket_that_stalls_mid_prune_is_one_wait_and_exit_1(s3, tmp_path):
    env = env_of(s3, tmp_path)
    names = [f"movies-20261202T00000{i}Z-abcde{i}.dump" for i in range(3)]
    for name in names:
        dead_run(s3, "mid", name)
    proc = start_moviectl(
        env, "--json", "backup", "prune", "--uploads-only", "--yes", "--repo", "s3://backups/mid"
    )
    try:
        deadline = time.monotonic() + 60
        while not cleaning(s3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        s3.pause()  # the first abort is on its way: the bucket stops answering
        t0 = time.monotonic()
        out, err = proc.communicate(timeout=200)
        took = time.monotonic() - t0
        left = left_behind(s3)
    finally:
        s3.resume()
    assert proc.returncode == 1, (out, err)  # the job is not done: not a success
    doc = json.loads(out)
    acts = [u["action"] for u in doc["leftover_uploads"]]
    assert acts.count("failed") >= 2 and "kept" not in acts, doc
    assert took < 45, took  # one rclone wait (about four times 5 s), not one per upload
    assert left == [] and SECRET_KEY not in out + err


def test_sigterm_while_rclone_waits_on_a_stalled_bucket_exits_at_once(s3, tmp_path):
    """SIGTERM unwinds moviectl at once (exit 143): the rclone it waits on is killed, not
    waited for (its timeouts would hold the exit for minutes at the default stall bound)."""
    env = {**env_of(s3, tmp_path), "MOVIE_STALL_TIMEOUT": "30"}
    dead_run(s3, "term", "movies-20261202T000000Z-abcdef.dump")
    proc = start_moviectl(
        env, "backup", "prune", "--uploads-only", "--yes", "--repo", "s3://backups/term"
    )
    try:
        deadline = time.monotonic() + 60
        while not cleaning(s3):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.01)
        s3.pause()
        time.sleep(1)  # rclone is waiting on the stalled server
        t0 = time.monotonic()
        proc.terminate()
        proc.communicate(timeout=200)
        took = time.monotonic() - t0
        left = left_behind(s3)
    finally:
        s3.resume()
    assert proc.returncode == 143 and took < 10, (proc.returncode, took)
    assert left == []


@pytest.mark.timeout(300)
def test_doctor_counts_every_bucket_within_healths_bound(s3, tmp_path):
    env = env_of(s3, tmp_path)
    dead_run(s3, "doc", "movies-20261202T000000Z-abcdef.dump")
    env["MOVIE_BACKUP_REPO"] = "s3://backups/doc,s3://backups/doc2"
    r = run_moviectl(env, "--json", "doctor", timeout=120)
    found = {f["name"]: f for f in one_json(r)["findings"]}["leftover uploads"]
    assert found["status"] == "warn" and "s3://backups/doc," in found["detail"], found
    assert "1 for `backup prune` to abort" in found["detail"]

    s3.pause()
    try:
        t0 = time.monotonic()
        r = run_moviectl(env, "--json", "doctor", timeout=300)
        took = time.monotonic() - t0
        left = left_behind(s3)
    finally:
        s3.resume()
    found = {f["name"]: f for f in one_json(r)["findings"]}["leftover uploads"]
    assert found["status"] == "warn" and "not checked" in found["detail"], found
    assert "s3://backups/doc" in found["detail"]  # which bucket was not counted
    assert took < 25, took  # twice MOVIE_CONNECT_TIMEOUT for the buckets, side by side
    assert left == []


def test_no_rclone_and_uploads_only_is_exit_9(s3, tmp_path):
    from tests.core.test_backups_s3_uploads import NO_RCLONE

    env = env_of(s3, tmp_path, PATH="/usr/bin:/bin")
    args = ("--json", "backup", "prune", "--uploads-only", "--yes", "--repo", "s3://backups/n")
    r = run_moviectl(env, *args, python=NO_RCLONE)
    assert r.returncode == 9 and "moviectl[s3-wal]" in one_json(r)["hint"], r.stdout


@pytest.mark.timeout(300)
def test_metrics_keep_the_last_count_while_the_bucket_stalls(s3, tmp_path):
    """As `up` 0 keeps a stalled repository's other series: an alert on leftover uploads
    must not resolve because the bucket stopped answering (nor while a count runs)."""
    from moviectl.core.health.repositories import UPLOADS_TTL
    from tests.core.test_health_repositories import _metrics, _serve

    repo = "s3://backups/met"
    dead_run(s3, "met", "movies-20261202T000000Z-abcdef.dump")
    left = f'moviectl_backup_repository_leftover_uploads{{repository="{repo}"}} 1.0'
    down = f'moviectl_backup_repository_up{{repository="{repo}"}} 0.0'
    for port in _serve(env_of(s3, tmp_path, MOVIE_BACKUP_REPO=repo)):
        assert left in _metrics(port).decode()
        s3.pause()
        try:
            seen, deadline = [], time.monotonic() + UPLOADS_TTL + 20  # past a recount
            while time.monotonic() < deadline:
                text = _metrics(port).decode()
                seen.append((down in text, left in text))
                time.sleep(2)
        finally:
            s3.resume()
    assert (True, True) in seen and all(kept for _, kept in seen), seen
    assert left_behind(s3) == []
