"""The `health --live` fast path and the full CLI read settings alike: one reader, one set
of rules. Each row runs both on the same environment and .env and expects the same."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import subprocess_env

ROWS = {
    "defaults, nobody listening": ({"MOVIE_DB_PORT": "1"}, None),
    "empty URL": ({"MOVIE_DATABASE_URL": ""}, None),
    "empty database name": ({"MOVIE_DB_NAME": "", "MOVIE_DB_PORT": "1"}, None),
    "empty user": ({"MOVIE_DB_USER": "", "MOVIE_DB_PORT": "1"}, None),
    "port 0": ({"MOVIE_DB_PORT": "0"}, None),
    "port not a number": ({"MOVIE_DB_PORT": "abc"}, None),
    "URL port 0": ({"MOVIE_DATABASE_URL": "postgresql://u:S3cret@127.0.0.1:0/db"}, None),
    "huge timeout": ({"MOVIE_CONNECT_TIMEOUT": "99999999999999999999"}, None),
    "zero timeout": ({"MOVIE_CONNECT_TIMEOUT": "0"}, None),
    "non-UTF-8 .env": ({}, b"MOVIE_DB_NAME=caf\xe9\n"),
    "environment wins over .env": ({"MOVIE_DB_PORT": "2"}, b"MOVIE_DB_PORT=1\n"),
    "single quotes literal": ({"MOVIE_DB_PORT": "1"}, b"MOVIE_DB_PASSWORD='a${HOME}b'\n"),
    "?password= URL": (
        {"MOVIE_DATABASE_URL": "postgresql://u@127.0.0.1:1/db?password=S3cret&sslmode=disable"},
        None,
    ),
    "key=value URL": ({"MOVIE_DATABASE_URL": "host=127.0.0.1 port=1 user=u dbname=d"}, None),
    "malformed URL": ({"MOVIE_DATABASE_URL": "postgresql://u:Sup3r/S3cret@h/db"}, None),
}


def _run(tmp_path, env, dotenv, fast: bool) -> tuple[int, dict]:
    if dotenv is not None:
        (tmp_path / ".env").write_bytes(dotenv)
    extra = {"MOVIE_CONNECT_TIMEOUT": "1", **env}
    if not fast:
        extra["MOVIECTL_NO_FASTPATH"] = "1"
    res = subprocess.run(
        [sys.executable, "-m", "moviectl", "health", "--live", "--json"],
        env=subprocess_env(**extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "S3cret" not in res.stdout + res.stderr and "Sup3r" not in res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout)


@pytest.mark.parametrize("row", list(ROWS), ids=list(ROWS))
def test_fast_path_and_full_cli_agree(tmp_path, row):
    env, dotenv = ROWS[row]
    fast_code, fast = _run(tmp_path, env, dotenv, fast=True)
    full_code, full = _run(tmp_path, env, dotenv, fast=False)
    assert fast_code == full_code, (fast, full)
    for doc in (fast, full):  # the same document but for times
        doc.pop("elapsed_ms", None)
        for check in doc.get("checks", []):
            check.pop("latency_ms")
    assert fast == full
