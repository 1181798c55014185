"""A hostile bucket against `backup prune`'s abort of leftover uploads: keys that share a
backup's name as a prefix are never aborted with it, and a garbled marker (deep JSON, an
infinite pid) is kept and reported, never a traceback. A real SeaweedFS and rclone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.core.test_backups_s3_uploads import env_for, moviectl_json, orphan_upload


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


@pytest.mark.timeout(300)
def test_prune_aborts_only_the_dead_backups_key_not_keys_it_prefixes(s3, movie_db_url, tmp_path):
    name = "movies-20261202T000000Z-abcdef.dump"
    orphan_upload(s3, f"pfx/{name}")
    s3.write(
        f"pfx/{name}.inprogress",
        json.dumps({"pid": dead_pid(), "host": socket.gethostname()}).encode(),
    )
    orphan_upload(s3, f"pfx/{name}.other")  # another tool's: shares the name as a prefix
    orphan_upload(s3, f"pfx/{name}/inside")
    env = env_for(s3, movie_db_url, tmp_path)
    doc = moviectl_json(
        env, "backup", "prune", "--keep-last", "1", "--repo", "s3://backups/pfx", "--yes"
    )
    acts = {u["key"]: u["action"] for u in doc["leftover_uploads"]}
    left = sorted(str(u["Key"]) for u in s3.multipart_uploads("pfx/"))
    assert acts[name] == "kept" and f"pfx/{name}" in left  # left for the lifecycle rule
    assert f"pfx/{name}.other" in left and f"pfx/{name}/inside" in left, (acts, left)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "marker",
    [
        b"[" * 100000 + b"]" * 100000,
        b'{"pid": Infinity, "host": "HOST"}',
        b'{"pid": 1e400, "host": "HOST"}',
    ],
    # short ids: pytest puts the test's id in PYTEST_CURRENT_TEST, and a 200 KB one makes
    # every program the test starts fail with E2BIG ("Argument list too long")
    ids=["nested", "infinity", "overflow"],
)
def test_a_garbled_marker_is_kept_not_a_traceback(s3, movie_db_url, tmp_path, marker):
    name = "movies-20261202T000000Z-abcdef.dump"
    orphan_upload(s3, f"garb/{name}")
    s3.write(f"garb/{name}.inprogress", marker.replace(b"HOST", socket.gethostname().encode()))
    s3.write("garb/movies-20261201T000000Z-fedcba.dump", b"x")  # and its manifest, as garbled
    s3.write("garb/movies-20261201T000000Z-fedcba.dump.manifest.json", b"[" * 100000)
    env = env_for(s3, movie_db_url, tmp_path)
    for args in (["backup", "list"], ["backup", "prune", "--keep-last", "1", "--yes"]):
        doc = moviectl_json(env, *args, "--repo", "s3://backups/garb")
        assert [u["action"] for u in doc["leftover_uploads"]] == ["kept"]
    assert len(s3.multipart_uploads("garb/")) == 1
