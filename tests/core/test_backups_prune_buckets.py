"""`backup prune` over two configured buckets when one of them is down or refuses: every
bucket is looked at, the reachable one's leftover upload is aborted, the other is named
(one line, never a key) and the exit code is that fault's, as `backup` gives it (3 down,
2 no bucket). A policy prune reads the first repository only: a second one down changes
nothing, the first down deletes nothing anywhere (exit 3). A real SeaweedFS and rclone;
the down bucket sits behind a proxy that holds its requests unanswered (moviectl has one
endpoint for every bucket, so one bucket's endpoint cannot be stopped alone)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_moviectl
from tests.core.s3server import SECRET_KEY, SeaweedS3
from tests.core.test_backups_s3_uploads import NO_RCLONE
from tests.core.test_uploads_report_faults import dead_run, env_of, one_json

NAME = "movies-20261202T000000Z-abcdef.dump"
LATER = "movies-20261202T000001Z-abcde1.dump"
DOWN = "s3://downbucket/x"


class DownBucket:
    """A TCP proxy before SeaweedFS's S3 port: a connection whose first request is for
    ``bucket`` (path-style, as obstore and rclone address an endpoint) is held and never
    answered, as a stalled server holds it; every other one passes through. obstore keeps
    one connection pool per bucket and rclone runs once per call, so no connection carries
    requests for two buckets."""

    def __init__(self, target: int, bucket: str) -> None:
        self.target, self.bucket = target, bucket
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.socks.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        head = b""
        with contextlib.suppress(OSError):
            while b"\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
            words = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            path = words[1] if len(words) > 1 else ""
            b = f"/{self.bucket}"
            if path == b or path.startswith((f"{b}/", f"{b}?")):
                return  # held: never answered, closed when the proxy stops
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.socks.append(upstream)
            upstream.sendall(head)
            threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
            _pipe(client, upstream)

    def stop(self) -> None:
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := src.recv(65536):
            dst.sendall(chunk)
        dst.shutdown(socket.SHUT_WR)


@pytest.fixture
def down(s3: SeaweedS3) -> Iterator[DownBucket]:
    proxy = DownBucket(s3.ports["s3"], "downbucket")
    yield proxy
    proxy.stop()


@pytest.mark.timeout(300)
def test_uploads_only_aborts_in_the_reachable_bucket_and_names_the_one_down(s3, down, tmp_path):
    """The down bucket listed first: it does not stop the round; exit 3, as `backup`."""
    dead_run(s3, "up", NAME)
    env = env_of(s3, tmp_path, AWS_ENDPOINT_URL=down.endpoint)
    env["MOVIE_BACKUP_REPO"] = f"{DOWN},s3://{s3.bucket}/up"
    prune = ("backup", "prune", "--uploads-only", "--yes")

    t0 = time.monotonic()
    r = run_moviectl(env, "--json", *prune, timeout=180)
    took = time.monotonic() - t0
    doc = one_json(r)
    assert r.returncode == 3, doc
    assert took < 60, took  # one bounded wait (MOVIE_STALL_TIMEOUT=5 and its retries)
    outcomes = {o["repository"]: o for o in doc["repositories"]}
    assert list(outcomes) == [DOWN, f"s3://{s3.bucket}/up"], doc
    bad, good = outcomes[DOWN], outcomes[f"s3://{s3.bucket}/up"]
    assert not bad["ok"] and bad["error"]["exit_code"] == 3, bad
    assert "did not answer" in bad["error"]["message"] and bad["leftover_uploads"] == []
    assert good["ok"] and good["error"] is None, good
    assert [(u["key"], u["action"]) for u in good["leftover_uploads"]] == [(NAME, "aborted")]
    assert [u["action"] for u in doc["leftover_uploads"]] == ["aborted"], doc
    assert DOWN in doc["repository"] and f"s3://{s3.bucket}/up" in doc["repository"]
    assert s3.multipart_uploads(f"up/{NAME}") == []  # the bucket's own listing agrees

    dead_run(s3, "up", LATER)  # the text: the same, the down bucket on one line
    r = run_moviectl(env, *prune, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert SECRET_KEY not in out and "Traceback" not in out, out
    named = [line for line in r.stdout.splitlines() if DOWN in line]
    assert len(named) == 1 and "not looked at" in named[0], r.stdout
    assert "did not answer" in named[0], named
    assert f"leftover upload s3://{s3.bucket}/up/{LATER}" in r.stdout, r.stdout
    assert "aborted" in r.stdout and s3.multipart_uploads(f"up/{LATER}") == []


@pytest.mark.timeout(300)
def test_uploads_only_beside_a_missing_bucket_is_its_exit_2(s3, down, tmp_path):
    """A bucket that refuses (it does not exist) listed second: the first still done, the
    missing one named with its fix, exit 2 as `backup` and a prune of it alone give. Both
    failing: both named, the first listed one's code. No rclone: exit 9 before either."""
    dead_run(s3, "ok", NAME)
    env = env_of(s3, tmp_path)
    env["MOVIE_BACKUP_REPO"] = f"s3://{s3.bucket}/ok,s3://nosuchbucket/y"
    r = run_moviectl(env, "--json", "backup", "prune", "--uploads-only", "--dry-run", timeout=180)
    doc = one_json(r)
    assert r.returncode == 2, doc
    ok, missing = doc["repositories"]
    assert ok["ok"] and [u["action"] for u in ok["leftover_uploads"]] == ["would abort"], ok
    assert missing["repository"] == "s3://nosuchbucket/y" and not missing["ok"], missing
    assert "does not exist" in missing["error"]["message"] and missing["error"]["hint"]
    assert len(s3.multipart_uploads(f"ok/{NAME}")) == 1  # a dry run aborts nothing

    r = run_moviectl(env, "backup", "prune", "--uploads-only", "--yes", timeout=180)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    named = [line for line in r.stdout.splitlines() if "nosuchbucket" in line]
    assert len(named) == 1 and "does not exist" in named[0], r.stdout
    assert s3.multipart_uploads(f"ok/{NAME}") == []
    r = run_moviectl(env, "backup", "prune", "--uploads-only", "--yes", timeout=180)
    assert r.returncode == 2 and f"no leftover multipart uploads in s3://{s3.bucket}/ok" in r.stdout

    both = {
        **env,
        "AWS_ENDPOINT_URL": down.endpoint,
        "MOVIE_BACKUP_REPO": f"{DOWN},s3://nosuchbucket/y",
    }
    r = run_moviectl(both, "--json", "backup", "prune", "--uploads-only", "--yes", timeout=180)
    doc = one_json(r)
    assert r.returncode == 3, doc  # the first listed fault's, as `backup` meets them
    assert [(o["repository"], o["error"]["exit_code"]) for o in doc["repositories"]] == [
        (DOWN, 3),
        ("s3://nosuchbucket/y", 2),
    ], doc
    bare = {**env, "PATH": "/usr/bin:/bin"}  # no rclone on the PATH nor beside python
    r = run_moviectl(bare, "--json", "backup", "prune", "--uploads-only", "--yes", python=NO_RCLONE)
    assert r.returncode == 9 and "moviectl[s3-wal]" in one_json(r)["hint"], r.stdout


@pytest.mark.timeout(300)
def test_policy_prune_with_a_repository_down_deletes_nothing_there(cli, s3, down, tmp_path):
    """`backup prune --keep-last 1` reads the first repository: the second down, the first
    is pruned (exit 0); the first down, exit 3 and nothing deleted in the second."""
    r = cli("seed", "--sample", "50")
    assert r.exit_code == 0, r.output
    cli.env.update(s3.env(MOVIE_BACKUP_DIR=str(tmp_path / "staging")))
    cli.env.update(AWS_ENDPOINT_URL=down.endpoint, MOVIE_STALL_TIMEOUT="5")
    repo = f"s3://{s3.bucket}/pol"
    paths = []
    for _ in range(2):
        r = cli("backup", "--json", "--to", repo)
        assert r.exit_code == 0, r.output
        paths.append(json.loads(r.stdout)["path"])
    before = s3.keys("pol")

    prune = ("backup", "prune", "--keep-last", "1", "--yes", "--json")
    r = cli(*prune, MOVIE_BACKUP_REPO=f"{DOWN},{repo}")
    assert r.exit_code == 3, r.output
    assert SECRET_KEY not in r.output and "did not answer" in json.loads(r.stdout)["message"]
    assert s3.keys("pol") == before  # nothing deleted in the repository that answers

    r = cli(*prune, MOVIE_BACKUP_REPO=f"{repo},{DOWN}")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["repository"] == repo and doc["deleted"] == [paths[0]], doc
    assert [o["repository"] for o in doc["repositories"]] == [repo], doc  # the first alone
    assert len(s3.keys("pol")) < len(before)
