"""What the probe sends to whatever answers: an impostor on a local port records it.

Under require/verify-* the user and database names must never leave in plaintext, whatever
the other end says; direct TLS (``sslnegotiation=direct``, PostgreSQL 17+) insists on ALPN
``postgresql``. Settings the probe cannot honour are bad parameters, as in pg_isready.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from moviectl.infra.probe import ACCEPTING, BAD_PARAMETERS, NO_RESPONSE, ping_target
from moviectl.infra.probe_wire import SSL_REQUEST
from moviectl.infra.settings import parse_db_url
from tests.conftest import Cli
from tests.infra.test_tls import PG15, _certificates

USER = "probe-user-name"
SASL = b"R" + (23).to_bytes(4, "big") + (10).to_bytes(4, "big") + b"SCRAM-SHA-256\0\0"


class Impostor:
    """One connection on a local port: ``script(conn)`` answers; every byte it reads (after
    TLS, if it wraps the connection) is kept in ``received``."""

    def __init__(self, script: Callable[[Impostor, socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received = b""
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def read(self, conn: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        self.received += data
        return data

    def rest(self, conn: socket.socket) -> None:
        """Everything until the client hangs up."""
        try:
            while chunk := conn.recv(4096):
                self.received += chunk
        except OSError:
            pass

    def _serve(self) -> None:
        self.listener.settimeout(30)
        conn, _ = self.listener.accept()
        conn.settimeout(30)
        try:
            self.script(self, conn)
        except OSError:
            pass
        finally:
            conn.close()
            self.listener.close()


@pytest.fixture
def certs(tmp_path) -> tuple[Path, Path, Path]:
    return _certificates(tmp_path / "certs", ("localhost",))


def probe(port: int, **kw: str) -> str:
    conninfo = f"host=localhost port={port} user={USER} dbname=movies " + " ".join(
        f"{k}={v}" for k, v in kw.items()
    )
    return ping_target(parse_db_url(conninfo), timeout=20).outcome


def test_require_never_sends_the_startup_packet_to_a_server_without_tls():
    def says_no(imp: Impostor, conn: socket.socket) -> None:
        imp.read(conn, 8)
        conn.sendall(b"N")
        imp.rest(conn)

    imp = Impostor(says_no)
    assert probe(imp.port, sslmode="require") == NO_RESPONSE
    imp.thread.join(30)
    assert imp.received == SSL_REQUEST


def test_verify_full_never_sends_the_startup_packet_before_the_certificate(certs):
    ca, _, _ = certs

    def says_yes_then_nothing(imp: Impostor, conn: socket.socket) -> None:
        imp.read(conn, 8)
        conn.sendall(b"S")
        imp.read(conn, 5)  # the ClientHello's head, then hang up
        conn.shutdown(socket.SHUT_RDWR)

    imp = Impostor(says_yes_then_nothing)
    assert probe(imp.port, sslmode="verify-full", sslrootcert=str(ca)) == NO_RESPONSE
    imp.thread.join(30)
    assert USER.encode() not in imp.received


def test_prefer_goes_on_in_plaintext_when_the_server_has_no_tls():
    def plain_server(imp: Impostor, conn: socket.socket) -> None:
        imp.read(conn, 8)
        conn.sendall(b"N")
        length = int.from_bytes(imp.read(conn, 4), "big")
        imp.read(conn, length - 4)
        conn.sendall(SASL)
        imp.rest(conn)

    imp = Impostor(plain_server)
    assert probe(imp.port, sslmode="prefer") == ACCEPTING
    imp.thread.join(30)
    assert USER.encode() in imp.received  # prefer allows it, as libpq does


@pytest.mark.parametrize("alpn", [["postgresql"], None])
def test_direct_tls_needs_alpn_postgresql(certs, alpn):
    ca, crt, key = certs
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)

    def direct_server(imp: Impostor, conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            length = int.from_bytes(imp.read(tls, 4), "big")
            imp.read(tls, length - 4)
            tls.sendall(SASL)
            imp.rest(tls)

    imp = Impostor(direct_server)
    outcome = probe(imp.port, sslmode="verify-full", sslrootcert=str(ca), sslnegotiation="direct")
    imp.thread.join(30)
    assert outcome == (ACCEPTING if alpn else NO_RESPONSE)
    assert (USER.encode() in imp.received) == bool(alpn)


def _trickle_message(imp: Impostor, conn: socket.socket) -> None:
    """A message 1 MB long, one byte at a time: every read is quick, the whole never ends."""
    imp.read(conn, 8)
    conn.sendall(b"N")
    length = int.from_bytes(imp.read(conn, 4), "big")
    imp.read(conn, length - 4)
    conn.sendall(b"R" + (1 << 20).to_bytes(4, "big"))
    while True:
        time.sleep(0.2)
        conn.sendall(b"\0")


def _endless_parameters(imp: Impostor, conn: socket.socket) -> None:
    """A login (trust) followed by ParameterStatus messages, never ReadyForQuery."""
    imp.read(conn, 8)
    conn.sendall(b"N")
    length = int.from_bytes(imp.read(conn, 4), "big")
    imp.read(conn, length - 4)
    conn.sendall(b"R\0\0\0\x08\0\0\0\0")
    while True:
        time.sleep(0.2)
        conn.sendall(b"S\0\0\0\x08a\0b\0")


@pytest.mark.parametrize("script", [_trickle_message, _endless_parameters])
def test_a_server_that_trickles_cannot_hold_the_probe_past_connect_timeout(script):
    # connect_timeout bounds the whole attempt, as in libpq, not each read: the watchdog
    # and health --live must end against a server that answers just often enough.
    imp = Impostor(script)
    conninfo = f"host=127.0.0.1 port={imp.port} user={USER} dbname=movies sslmode=prefer"
    started = time.monotonic()
    answer = ping_target(parse_db_url(conninfo), timeout=1)
    assert answer.outcome == NO_RESPONSE
    assert time.monotonic() - started < 30  # it ends (unbounded before)
    imp.thread.join(30)


def test_what_an_impostor_says_reaches_no_terminal_raw():
    # a 57P03 message is shown as the detail: whatever answers on the port must not forge
    # an output line or send the operator's terminal an escape sequence
    evil = b"starting up\x1b]0;owned\x07\x1b[2J\nforged: ok" + b"x" * 5000

    def rejecting(imp: Impostor, conn: socket.socket) -> None:
        imp.read(conn, 8)
        conn.sendall(b"N")
        length = int.from_bytes(imp.read(conn, 4), "big")
        imp.read(conn, length - 4)
        body = b"SFATAL\0C57P03\0M" + evil + b"\0\0"
        conn.sendall(b"E" + (len(body) + 4).to_bytes(4, "big") + body)
        imp.rest(conn)

    imp = Impostor(rejecting)
    url = f"postgresql://u:pw@127.0.0.1:{imp.port}/movies"
    r = Cli({"MOVIE_DATABASE_URL": url})("health", "--live")
    imp.thread.join(30)
    assert r.exit_code == 1, r.output
    assert "starting up" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output
    assert not any(line.startswith("forged") for line in r.output.splitlines())
    assert len(r.output) < 2000


@pytest.mark.parametrize("extra", ["", "sslrootcert=/nonexistent/ca.pem"])
def test_verify_full_without_a_root_certificate_names_the_file(extra, tmp_path):
    def says_yes(imp: Impostor, conn: socket.socket) -> None:
        imp.read(conn, 8)
        conn.sendall(b"S")
        imp.rest(conn)

    imp = Impostor(says_yes)
    conninfo = f"host=localhost port={imp.port} user={USER} dbname=d sslmode=verify-full {extra}"
    answer = ping_target(parse_db_url(conninfo), timeout=20)
    imp.thread.join(30)
    assert answer.outcome == NO_RESPONSE  # as libpq: the TLS stage fails
    root = extra.partition("=")[2] or str(tmp_path / ".postgresql" / "root.crt")
    assert root in answer.detail and "sslrootcert" in answer.detail, answer.detail
    assert USER.encode() not in imp.received


@pytest.mark.parametrize(
    "extra",
    [
        "gssencmode=require",  # this probe has no GSSAPI
        "sslnegotiation=direct sslmode=prefer",  # libpq 17 refuses the weak combination
        "host=localhost,localhost port=1,2,3",
        "host=a,b hostaddr=127.0.0.1",
    ],
)
def test_what_the_probe_cannot_honour_is_a_bad_parameter(extra):
    conninfo = f"host=localhost port=1 user=u dbname=d {extra}"
    assert ping_target(parse_db_url(conninfo), timeout=5).outcome == BAD_PARAMETERS


@pytest.mark.skipif(not (PG15 / "pg_isready").exists(), reason="no pg_isready 15")
@pytest.mark.parametrize("extra", ["port=1,2,3", "hostaddr=127.0.0.1"])
def test_pg_isready_says_no_attempt_too(extra, tmp_path):
    conninfo = f"host=localhost,localhost user=u dbname=d {extra}"
    assert ping_target(parse_db_url(conninfo), timeout=5).outcome == BAD_PARAMETERS
    r = subprocess.run(
        [str(PG15 / "pg_isready"), "-d", conninfo],
        capture_output=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert r.returncode == 3


@pytest.fixture(autouse=True)
def _no_client_files(monkeypatch, tmp_path) -> Iterator[None]:
    monkeypatch.setenv("HOME", str(tmp_path))
    yield
