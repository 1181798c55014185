"""`moviectl health --serve`: the endpoints as Kubernetes and the movie service expect them,
driven by a real HTTP client and, for malformed requests, by raw sockets."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from moviectl.cli.serve_log import EXIT_WAIT, QUEUED
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from tests.conftest import health_serving, stop, subprocess_env, wait_for
from tests.ports import free_port


def _serve(url: str, *extra: str) -> Iterator[int]:
    # a deadline that a loaded CI machine meets: the default's own test is test_health_probes
    env = {"MOVIE_CONNECT_TIMEOUT": "2", "MOVIE_PROBE_DEADLINE": "5"}
    with (
        tempfile.TemporaryDirectory() as d,
        health_serving(url, Path(d) / "log", *extra, **env) as (port, _),
    ):
        yield port


@pytest.fixture
def service(movie_db_url) -> Iterator[int]:
    yield from _serve(movie_db_url)


def _get(port: int, path: str, method: str = "GET", **headers: str):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes; the server's answer up to its end (a server that rejects early may
    reset the connection while we still send: what it answered is still read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        answer = b""
        try:
            while chunk := s.recv(65536):
                answer += chunk
                head, sep, body = answer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(ln.split(b":")[1])
                        for ln in head.split(b"\r\n")
                        if ln.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if sep and length is not None and len(body) >= length:
                    break
        except (ConnectionResetError, TimeoutError):
            pass
    return answer


def test_endpoints_bodies_and_trace_ids(service, movie_db_url):
    resp, body = _get(service, "/healthz", **{"X-Trace-Id": "abc123"})
    doc = json.loads(body)
    assert resp.status == 200 and resp.version == 11
    assert doc["status"] == "ok" and doc["database"] == "postgres" and doc["trace_id"] == "abc123"
    assert resp.getheader("X-Trace-Id") == "abc123"
    resp, _ = _get(service, "/livez")
    generated = resp.getheader("X-Trace-Id")
    assert resp.status == 200 and generated.startswith("req-") and len(generated) == 12
    resp, body = _get(service, "/readyz", method="HEAD")
    assert resp.status == 200 and body == b"" and int(resp.getheader("Content-Length")) > 0
    assert _get(service, "/nope")[0].status == 404
    assert _get(service, "/healthz", method="POST")[0].status == 405
    password = psycopg.conninfo.conninfo_to_dict(movie_db_url).get("password")
    assert password and password.encode() not in _get(service, "/healthz")[1]


def test_pending_migrations_fail_readiness_not_liveness(service, movie_db_url):
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("DELETE FROM alembic_version")
    # the cache lives one second; the refresh after it may take up to the probe deadline
    # (5 s here) on a loaded machine, where a fixed 10 s look could end before it
    assert wait_for(lambda: _get(service, "/readyz")[0].status == 503, 60)
    assert _get(service, "/livez")[0].status == 200
    resp, body = _get(service, "/healthz")
    assert resp.status == 503 and json.loads(body)["status"] == "fail"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Trace-Id: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "http-9.9", "1MB-header", "70KB-uri"],
)
def test_malformed_requests_get_an_answer_and_inject_nothing(service, request_bytes):
    answer = _raw(service, request_bytes)
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    assert 400 <= status < 500 or status == 505, answer[:200]
    assert b"Set-Cookie" not in answer and b"set-cookie" not in answer.lower()
    assert _get(service, "/livez")[0].status == 200  # still serving


def test_a_half_sent_request_is_closed_not_held(service):
    """slowloris: a client that never finishes its headers is cut off, not kept forever:
    one that sends half a head, one that trickles a byte a second, one that sends nothing,
    and one that asks again after a response and stops halfway (all at once)."""
    import threading
    import time

    def held(first: bytes, trickle: bool) -> float:
        with socket.create_connection(("127.0.0.1", service), timeout=30) as s:
            started = time.monotonic()
            if first.startswith(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"):
                s.sendall(first)
                answer = b""  # its answer, to its end; the connection stays open (keep-alive)
                while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
                    answer += s.recv(65536)
                s.sendall(b"GET /livez HTTP/1.1\r\n")
            elif first:
                s.sendall(first)
            while trickle:
                try:
                    s.sendall(b"X")
                except (BrokenPipeError, ConnectionResetError):
                    break
                s.settimeout(1)
                try:
                    if s.recv(100) == b"":
                        break
                except TimeoutError:
                    continue
                except ConnectionResetError:  # closed with our bytes unread: a reset
                    break
            s.settimeout(30)
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""  # the server closes
            return time.monotonic() - started

    clients = {
        "half a head": (b"GET /livez HTTP/1.1\r\nHost: x\r\n", False),
        "a byte a second": (b"GET /livez HTTP/1.1\r\nX-A: ", True),
        "nothing": (b"", False),
        "half a second head": (b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", False),
    }
    took: dict[str, float] = {}
    threads = [
        threading.Thread(target=lambda k=k, a=a: took.__setitem__(k, held(*a)))
        for k, a in clients.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(took) == set(clients), took  # a thread that failed left no time
    assert all(t < 20 for t in took.values()), took


def test_many_headers_and_a_hostile_trace_id_are_handled(service):
    folded = _raw(  # a folded header tries to smuggle a Set-Cookie into the response
        service,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Trace-Id: abc\r\n Set-Cookie: evil=1\r\n\r\n",
    )
    assert b"set-cookie" not in folded.lower()
    headers = "".join(f"X-H{i}: {i}\r\n" for i in range(101))
    answer = _raw(
        service,
        f"GET /livez HTTP/1.1\r\nHost: x\r\n{headers}X-Trace-Id: a b\tc\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    trace = next(ln for ln in answer.split(b"\r\n") if ln.lower().startswith(b"x-trace-id"))
    assert trace.split(b": ", 1)[1].startswith(b"req-")  # replaced, not echoed


def test_details_stay_home_on_a_public_bind(movie_db_url):
    for port in _serve(movie_db_url, "--bind", "0.0.0.0"):
        doc = json.loads(_get(port, "/healthz")[1])
        assert doc["status"] == "ok" and "url" not in doc
        assert all(set(c) == {"name", "status", "latency_ms"} for c in doc["checks"])


def test_metrics(service):
    resp, body = _get(service, "/metrics")
    text = body.decode()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    for name in (
        'moviectl_check_up{check="query"} 1.0',
        'moviectl_check_status{check="capacity",status="pass"} 1.0',
        "moviectl_check_latency_seconds",
        "moviectl_pool_size",
        "moviectl_pool_checked_out",
        "moviectl_pool_overflow 0.0",
        "moviectl_connections{",
        "moviectl_max_connections",
        "moviectl_database_size_bytes{datname=",
        "moviectl_migrations_pending{datname=",
        "moviectl_migrations_ahead{datname=",
        "moviectl_longest_transaction_seconds{datname=",
        "moviectl_last_backup_timestamp_seconds",
        "moviectl_last_verified_backup_timestamp_seconds",
    ):
        assert name in text, name


def test_an_outage_turns_readiness_503_and_back_and_liveness_stays(tmp_path):
    srv = EmbeddedServer(tmp_path / "o", free_port(), "postgres", "pw", options=TEST_OPTIONS)
    srv.start()
    url = f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"
    try:
        for port in _serve(url):

            def query(port: int = port) -> tuple[int, str]:  # no schema here: only the query
                resp, body = _get(port, "/readyz")
                checks = {c["name"]: c["status"] for c in json.loads(body)["checks"]}
                return resp.status, checks.get("query", "")

            assert wait_for(lambda: query() == (503, "pass"), 15)
            srv.stop("immediate")
            assert wait_for(lambda: query()[1] in ("fail", "skip"), 15)
            assert query()[0] == 503
            assert _get(port, "/livez")[0].status == 200  # liveness is the process alone
            srv.start()
            assert wait_for(lambda: query() == (503, "pass"), 15)
    finally:
        srv.stop("immediate")


def _asgi_get(url: str, scope: dict) -> list[dict]:
    """One request straight into ``create_app``'s ASGI callable, as a mounting service
    would send it; the messages the app sent back."""
    import asyncio

    from moviectl.core.health.http import create_app
    from moviectl.infra.settings import load_settings

    # a deadline CI meets: the first /readyz connects cold on a loaded machine
    app = create_app(load_settings(use_dotenv=False, database_url=url), deadline=5)
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app({"type": "http", "method": "GET", "headers": [], **scope}, receive, send))
    return sent


def test_create_app_is_an_asgi_app_another_service_can_mount(movie_db_url):
    sent = _asgi_get(movie_db_url, {"path": "/livez"})
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["status"] == "ok"


def test_mounted_under_a_prefix_it_routes_by_the_rest(movie_db_url):
    scope = {
        "path": "/health/readyz",
        "root_path": "/health",
        "headers": [(b"x-trace-id", b"svc-42")],
    }
    sent = _asgi_get(movie_db_url, scope)
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"])["trace_id"] == "svc-42"


@contextlib.contextmanager
def _log_unread(url: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`health --serve` with its stderr a pipe nobody reads yet; (port, process) once up."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", "health", "--serve", str(port)],
        env=subprocess_env(MOVIE_DATABASE_URL=url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:

        def up() -> bool:
            with contextlib.suppress(OSError):
                return bool(_get(port, "/livez")[0].status == 200)
            return False

        assert wait_for(up, 30)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _probes(port: int, n: int) -> None:
    """``n`` probes on one connection, each answered 200 within the client's timeout."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(n):
        conn.request("GET", "/livez")
        resp = conn.getresponse()  # a probe waiting on the log would time out here
        resp.read()
        assert resp.status == 200
    conn.close()


def test_a_log_nobody_reads_never_stops_a_probe(movie_db_url):
    """stderr a pipe nobody drains (a stalled log collector): once it is full, probes still
    answer at once; lines past the writer's queue are dropped, and counted once it drains."""
    with _log_unread(movie_db_url) as (port, proc):
        _probes(port, QUEUED + 2000)  # ~100 bytes a line: the 64 KiB pipe and the queue full
        got = bytearray()
        assert proc.stderr is not None
        err = proc.stderr

        def read() -> None:
            while chunk := os.read(err.fileno(), 1 << 16):
                got.extend(chunk)

        drain = threading.Thread(target=read, daemon=True)
        drain.start()  # the collector catches up: the writer writes again, says what it lost
        assert wait_for(lambda: b"log lines dropped" in got, 30), bytes(got[-500:])
        line = next(ln for ln in bytes(got).splitlines() if b"log lines dropped" in ln)
        assert int(line.split(b" log lines dropped")[0].rsplit(b" ", 1)[1]) >= 1000
        _probes(port, 1)
        stop(proc)


def test_sigterm_with_the_log_pipe_full_ends_the_server(movie_db_url):
    """The writer blocked on a full pipe holds nothing the shutdown needs: SIGTERM ends the
    server within its graceful shutdown and the writer's ``EXIT_WAIT``."""
    with _log_unread(movie_db_url) as (port, proc):
        _probes(port, 1500)  # past the pipe's 64 KiB: the writer now blocks
        stop(proc, timeout=15 + 2 * EXIT_WAIT)  # raises if it has not ended


def test_a_slow_log_reader_gets_every_line_and_the_last_word(movie_db_url):
    """A reader slower than the backlog (a throttled collector) is not taken for none: at
    SIGTERM the writer finishes while its writes go through, and the exit's own line
    ("terminated") comes last, not lost to /dev/null."""
    with _log_unread(movie_db_url) as (port, proc):
        n = 2500  # ~300 KB: more than the pipe holds, written in more than EXIT_WAIT below
        _probes(port, n)
        proc.terminate()
        got = bytearray()
        assert proc.stderr is not None
        while chunk := os.read(proc.stderr.fileno(), 16 << 10):  # ~80 KB/s
            got.extend(chunk)
            time.sleep(0.2)
        assert proc.wait(timeout=30) == 143
    text = bytes(got).decode()
    assert text.count("GET /livez 200") >= n + 1  # and the probe that saw it up
    assert "dropped" not in text
    assert text.rstrip().endswith("terminated"), text[-300:]
