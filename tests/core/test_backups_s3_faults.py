"""Faults on the way to a bucket: wrong keys, no bucket, no server, a server stalled or
killed mid-upload, moviectl killed mid-upload, two backups at once."""

from __future__ import annotations

import json
import signal
import time

import pytest

from tests.conftest import run_at_once, run_moviectl, start_moviectl, subprocess_env, wait_for
from tests.core.s3server import SECRET_KEY, SeaweedS3


def env_for(s3: SeaweedS3, url: str, tmp_path, **extra: str) -> dict[str, str]:
    return subprocess_env(
        MOVIE_DATABASE_URL=url,
        MOVIE_BACKUP_DIR=str(tmp_path / "staging"),
        MOVIE_STALL_TIMEOUT="5",
        **s3.env(**extra),
    )


def listed(env: dict[str, str], repo: str) -> list[dict]:
    r = run_moviectl(env, "--json", "backup", "list", "--repo", repo)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout)["backups"])


def test_wrong_credentials_exit_4_naming_the_endpoint_not_the_secret(s3, movie_db_url, tmp_path):
    env = env_for(s3, movie_db_url, tmp_path, AWS_SECRET_ACCESS_KEY="wrong-" + SECRET_KEY)
    r = run_moviectl(env, "--json", "backup", "--to", "s3://backups/x")
    assert r.returncode == 4, r.stderr
    doc = json.loads(r.stdout)
    assert s3.endpoint in doc["message"] and "credentials" in doc["message"]
    assert SECRET_KEY not in r.stdout + r.stderr
    assert s3.keys("x") == []


def test_missing_bucket_exit_2_with_the_fix(s3, movie_db_url, tmp_path):
    r = run_moviectl(env_for(s3, movie_db_url, tmp_path), "backup", "--to", "s3://nobucket/x")
    assert r.returncode == 2, r.stderr
    assert "'nobucket' does not exist" in r.stderr and "mb s3://nobucket" in r.stderr


def test_endpoint_down_exit_3_quickly(movie_db_url, tmp_path):
    down = SeaweedS3(tmp_path / "never")  # never started: nothing listens there
    env = env_for(down, movie_db_url, tmp_path)
    t0 = time.monotonic()
    r = run_moviectl(env, "backup", "--to", "s3://backups/x", timeout=90)
    assert r.returncode == 3, r.stderr
    assert down.endpoint in r.stderr and time.monotonic() - t0 < 80


def _start_upload(env: dict[str, str], s3: SeaweedS3, prefix: str):
    proc = start_moviectl(env, "--json", "backup", "--to", f"s3://backups/{prefix}", "-Z", "0")
    assert wait_for(lambda: any(k.endswith(".inprogress") for k in s3.keys(prefix)), 60)
    time.sleep(0.5)  # the upload is under way
    return proc


@pytest.mark.timeout(240)
def test_endpoint_stalled_mid_upload_bounded_exit_3_nothing_listed(s3, big_db, tmp_path):
    env = env_for(s3, big_db, tmp_path)
    proc = _start_upload(env, s3, "stall")
    s3.pause()
    try:
        _out, err = proc.communicate(timeout=150)  # bounded by MOVIE_STALL_TIMEOUT=5
    finally:
        s3.resume()
    assert proc.returncode == 3, err
    assert "did not answer" in err
    assert listed(env, "s3://backups/stall") == []


@pytest.mark.timeout(240)
def test_server_killed_mid_upload_then_restarted(s3, big_db, tmp_path):
    env = env_for(s3, big_db, tmp_path)
    proc = _start_upload(env, s3, "killed")
    s3.stop()
    _out, err = proc.communicate(timeout=150)
    assert proc.returncode == 3, err
    s3.start()
    assert listed(env, "s3://backups/killed") == []


@pytest.mark.timeout(240)
def test_moviectl_killed_mid_upload_leaves_no_listed_backup(s3, big_db, tmp_path):
    env = env_for(s3, big_db, tmp_path)
    proc = _start_upload(env, s3, "kill9")
    staging = tmp_path / "staging"  # streamed: no local copy of the dump, even mid-way
    assert not staging.exists() or not any(staging.rglob("*"))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert listed(env, "s3://backups/kill9") == []
    # the next backup from this host removes what the dead one left
    r = run_moviectl(env, "--json", "backup", "--to", "s3://backups/kill9", timeout=180)
    assert r.returncode == 0, r.stderr
    name = json.loads(r.stdout)["path"].rsplit("/", 1)[1]
    assert s3.keys("kill9") == [f"kill9/{name}", f"kill9/{name}.manifest.json"]
    assert s3.multipart_uploads("kill9/") == []  # the dead run's parts were aborted too


@pytest.mark.timeout(240)
def test_two_backups_at_once_both_complete_and_verify(s3, cli, movie_db_url, tmp_path):
    assert cli("seed", "--sample", "300").exit_code == 0
    env = env_for(s3, movie_db_url, tmp_path)
    docs = run_at_once(env, "backup", "--to", "s3://backups/twice")
    assert len({d["path"] for d in docs}) == 2
    for d in docs:
        r = run_moviectl(env, "--json", "backup", "verify", d["path"], timeout=120)
        assert r.returncode == 0, r.stderr
    assert len(listed(env, "s3://backups/twice")) == 2


def _slow_object(s3: SeaweedS3, key: str, mib: int = 24) -> bytes:
    import os

    data = os.urandom(mib << 20)
    s3.write(key, data)
    return data


def _repo(s3: SeaweedS3, prefix: str, monkeypatch):
    from moviectl.core.backups.s3 import S3Repository

    for k, v in s3.env().items():  # the repository reads AWS_* as every AWS tool does
        monkeypatch.setenv(k, v)
    return S3Repository("backups", prefix, wait=5)


def test_a_download_longer_than_the_wait_completes(s3, monkeypatch):
    """The wait bounds silence, not the whole body: a big backup on a slow link arrives."""
    data = _slow_object(s3, "slow/big.dump")
    repo = _repo(s3, "slow", monkeypatch)
    t0, got = time.monotonic(), bytearray()
    for block in repo.stream("big.dump"):
        got += block
        time.sleep(0.3)  # a slow consumer: 24 blocks of 1 MiB take ~7 s > the 5 s wait
    assert bytes(got) == data and time.monotonic() - t0 > 5


@pytest.mark.timeout(120)
def test_a_download_from_a_stalled_server_ends_within_the_wait(s3, monkeypatch):
    from moviectl.infra.errors import Unreachable

    _slow_object(s3, "stalled/big.dump", mib=32)
    repo = _repo(s3, "stalled", monkeypatch)
    blocks = repo.stream("big.dump")
    next(blocks)
    s3.pause()
    t0 = time.monotonic()
    try:
        with pytest.raises(Unreachable, match="did not answer"):
            for _ in blocks:
                pass
    finally:
        s3.resume()
    assert time.monotonic() - t0 < 60


@pytest.mark.timeout(180)
def test_the_readme_seaweedfs_takes_its_keys_from_the_environment(movie_db_url, tmp_path):
    """README: `AWS_ACCESS_KEY_ID=… AWS_SECRET_ACCESS_KEY=… weed mini … -bucket=backups`
    is all a new user starts; those keys work and others are refused."""
    server = SeaweedS3(tmp_path / "readme", env_keys=True)
    server.start()
    try:
        env = env_for(server, movie_db_url, tmp_path)
        r = run_moviectl(env, "--json", "backup", "--to", "s3://backups/readme", timeout=120)
        assert r.returncode == 0, r.stderr
        assert len(listed(env, "s3://backups/readme")) == 1
        wrong = env_for(server, movie_db_url, tmp_path, AWS_SECRET_ACCESS_KEY="not-the-key")
        r = run_moviectl(wrong, "backup", "list", "--repo", "s3://backups/readme")
        assert r.returncode == 4, r.stderr
    finally:
        server.stop()


def test_a_table_lock_held_elsewhere_is_lock_busy_and_nothing_listed(s3, movie_db_url, tmp_path):
    """The manifest's row counts read the snapshot beside the upload: a lock they (or
    pg_dump) cannot get ends the backup as LockBusy naming the holder, the upload aborted,
    nothing left in the bucket."""
    import psycopg

    holder = psycopg.connect(movie_db_url)
    try:
        holder.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
        env = env_for(s3, movie_db_url, tmp_path)
        r = run_moviectl(env, "--json", "backup", "--to", "s3://backups/locked", timeout=120)
    finally:
        holder.close()
    assert r.returncode == 7, r.stderr
    doc = json.loads(r.stdout)
    assert "table lock was not granted" in doc["message"] and "blocked by" in doc["message"]
    assert s3.keys("locked") == []
