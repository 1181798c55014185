"""`moviectl health --serve` under hostility: idle and slow connections, forged log lines,
odd manifests, oversized heads. A real server process, driven over raw sockets."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moviectl.cli.http_protocol import MAX_CONNECTIONS
from tests.conftest import Cli, health_serving, wait_for
from tests.core.test_health_http import _get, _raw


@contextlib.contextmanager
def _serving(url: str, log: Path, **env: str) -> Iterator[int]:
    """The real `health --serve` process; its log (stderr) goes to ``log``."""
    env = {"MOVIE_CONNECT_TIMEOUT": "2", "MOVIE_PROBE_DEADLINE": "5", **env}  # CI meets it
    with health_serving(url, log, **env) as (port, _):
        yield port


@pytest.fixture
def served(movie_db_url, tmp_path) -> Iterator[tuple[int, Path]]:
    log = tmp_path / "serve.log"
    with _serving(movie_db_url, log) as port:
        yield port, log


def _open_idle(port: int, n: int, first: bytes = b"") -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        if first:
            s.sendall(first)
        socks.append(s)
    return socks


def _livez_status(port: int) -> int:
    return _get(port, "/livez")[0].status


def test_idle_and_slow_connections_do_not_fail_the_probes(served):
    """300 connections that send nothing or half a head: uvicorn's limit_concurrency
    counted them, and every probe got 503 until the head deadline closed them."""
    port, _ = served
    socks = _open_idle(port, 150) + _open_idle(port, 150, b"GET /livez HTTP/1.1\r\nHost: x\r\n")
    try:
        time.sleep(1)  # all accepted by the server
        assert _livez_status(port) == 200
        assert _get(port, "/readyz")[0].status == 200
    finally:
        for s in socks:
            s.close()


def test_beyond_the_connection_cap_the_oldest_idle_ones_make_room(served):
    port, _ = served
    n = MAX_CONNECTIONS + 50
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n + 200:
        if hard != resource.RLIM_INFINITY and hard < n + 200:
            pytest.skip(f"this process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 200, hard))
    socks = _open_idle(port, n)
    try:
        time.sleep(1)
        assert _livez_status(port) == 200
        closed = 0
        for s in socks[:100]:  # the oldest were closed by the server to make room
            s.settimeout(5)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                closed += s.recv(1) == b""
        assert closed >= 50
    finally:
        for s in socks:
            s.close()


def test_an_encoded_newline_in_the_path_forges_no_log_line(served):
    port, log = served
    forged = "2099-01-01 00:00:00,000 INFO GET /admin 200 trace_id=forged"
    path = "/livez%0d%0a" + forged.replace(" ", "%20") + "%1b[31m"
    answer = _raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 404"), answer[:200]
    deadline = time.monotonic() + 15
    while "trace_id=forged" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    lines = text.splitlines()
    (logged,) = [ln for ln in lines if "forged" in ln]
    assert "/livez\\r\\n2099-01-01" in logged and " 404 " in logged
    assert not any(ln.startswith("2099") for ln in lines)
    assert "\x1b" not in text and "\r" not in text


def test_a_manifest_without_a_zone_does_not_break_metrics(movie_db_url, tmp_path):
    """`backup list` and restore accept a naive timestamp; `/metrics` raised on it (500)."""
    backups = tmp_path / "backups"
    cli = Cli({"MOVIE_DATABASE_URL": movie_db_url, "MOVIE_BACKUP_DIR": str(backups)})
    r = cli("backup", "--json")
    assert r.exit_code == 0, r.output
    (manifest,) = backups.glob("*.manifest.json")
    doc = json.loads(manifest.read_text())
    doc["finished_at"] = "2020-01-01T00:00:00"  # no zone
    doc["verified_at"] = "2020-01-02T00:00:00"
    manifest.write_text(json.dumps(doc))
    assert cli("backup", "list").exit_code == 0  # the rest of the tool accepts it
    with _serving(movie_db_url, tmp_path / "log", MOVIE_BACKUP_DIR=str(backups)) as port:
        resp, body = _get(port, "/metrics")
    assert resp.status == 200, body[:300]
    text = body.decode()
    seen = {
        ln.split()[0]: float(ln.split()[1])
        for ln in text.splitlines()
        if ln.startswith(("moviectl_backup_", "moviectl_last_"))
    }
    utc = 1577836800.0  # 2020-01-01T00:00:00Z: read as UTC
    assert seen["moviectl_last_backup_timestamp_seconds"] == utc
    assert seen["moviectl_last_verified_backup_timestamp_seconds"] == utc + 86400
    assert seen["moviectl_backup_manifests_unreadable"] == 0


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


@pytest.mark.parametrize(
    ("size", "code"),
    [(15 * 1024, 200), (20 * 1024, 431), (60 * 1024, 431), (100 * 1024, 431)],
)
def test_the_documented_header_limit_holds(served, size, code):
    """The README's 16 KiB: 17-60 KB heads were served, larger ones got a reset."""
    port, _ = served
    answer = _raw(port, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * size + b"\r\n\r\n")
    assert _status(answer) == code, answer[:200]
    if code == 431:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert json.loads(body)["error"] == "request header fields too large"
        assert b"connection: close" in head.lower()
    assert _livez_status(port) == 200


@pytest.mark.parametrize("length", [2100, 10_000, 200_000])
def test_a_long_target_is_414_with_a_body(served, length):
    port, _ = served
    answer = _raw(port, b"GET /" + b"a" * length + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(answer) == 414, answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"] == "URI too long"
    assert _livez_status(port) == 200


def _server_end_open(port: int, client: int) -> bool:
    """Does the server still hold its end of the connection from local port ``client``
    (ESTABLISHED; once it lets go the kernel may keep an orphan in FIN_WAIT1)?"""
    here = f"0100007F:{port:04X} 0100007F:{client:04X} 01 "
    return any(here in line for line in Path("/proc/net/tcp").read_text().splitlines())


def test_a_client_that_reads_nothing_is_let_go(movie_db_url, tmp_path):
    """Pipelined requests whose answers are never read fill both sockets' buffers and the
    server's own; within the deadline the connection must be freed (a plain close waited
    for ever to send what was queued, holding the socket; the app waited for ever to write)."""
    with _serving(movie_db_url, tmp_path / "serve.log") as port:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(("127.0.0.1", port))
        s.settimeout(2)
        with contextlib.suppress(OSError):  # the server stops reading once it cannot write
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n" * 40000)
        try:
            client = s.getsockname()[1]
            assert _server_end_open(port, client)
            assert wait_for(lambda: not _server_end_open(port, client), 30), "never freed"
            assert _livez_status(port) == 200
        finally:
            s.close()
