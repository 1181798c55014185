"""`backup prune` guards: `--uploads-only` looks at every configured bucket, not only the
first repository (a directory listed first holds no multipart uploads). A real SeaweedFS
and rclone, as in test_uploads_report_faults.py."""

from __future__ import annotations

from tests.conftest import run_moviectl, subprocess_env
from tests.core.test_uploads_report_faults import dead_run, env_of, one_json

NAME = "movies-20261202T000000Z-abcdef.dump"


def test_uploads_only_looks_at_the_bucket_listed_after_a_directory(s3, tmp_path):
    """MOVIE_BACKUP_REPO=/dir,s3://bucket/prefix: the bucket's dead upload is aborted, and
    the output names the bucket it looked at (the directory has none to look at)."""
    dead_run(s3, "second", NAME)
    local = tmp_path / "local"
    env = {**env_of(s3, tmp_path), "MOVIE_BACKUP_REPO": f"{local},s3://{s3.bucket}/second"}
    prune = ("backup", "prune", "--uploads-only", "--yes")
    r = run_moviectl(env, "--json", *prune)
    doc = one_json(r)
    assert r.returncode == 0, doc
    assert f"s3://{s3.bucket}/second" in doc["repository"], doc
    assert [u["action"] for u in doc["leftover_uploads"]] == ["aborted"], doc
    assert not s3.multipart_uploads(f"second/{NAME}")
    r = run_moviectl(env, *prune)  # nothing left: the text names the bucket it looked in
    assert r.returncode == 0 and f"s3://{s3.bucket}/second" in r.stdout, r.stdout + r.stderr
    r = run_moviectl(env, *prune, "--repo", str(local))  # --repo: that one alone
    assert r.returncode == 0 and f"in {local}" in r.stdout, r.stdout + r.stderr


def test_prune_refuses_beside_a_docker_upgrade_state_it_cannot_read(tmp_path):
    """A `docker-upgrade-<project>.json` moviectl did not write might name the safety backup
    an upgrade's --rollback needs: prune refuses (exit 5, naming it), as `db up` does."""
    data, backups = tmp_path / "data", tmp_path / "backups"
    data.mkdir()
    backups.mkdir()
    garbled = data / "docker-upgrade-proj.json"
    garbled.write_text('{"phase": 3')
    env = subprocess_env(MOVIE_DATA_DIR=str(data), MOVIE_BACKUP_DIR=str(backups))
    r = run_moviectl(env, "backup", "prune", "--keep-last", "1", "--yes")
    said = " ".join(r.stderr.split())
    assert r.returncode == 5 and "not an upgrade state moviectl wrote" in said, said
    assert str(garbled) in said and garbled.exists()
