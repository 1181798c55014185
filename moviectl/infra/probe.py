"""The pg_isready question, in the standard library only (it runs on the hot path).

Opens a TCP connection, sends a protocol-3.0 StartupMessage and reads the
server's first answer, exactly the information ``PQping`` uses:

- an authentication request or any error but "cannot connect now" → accepting
- SQLSTATE 57P03 (starting up, shutting down, in recovery) → rejecting
- no TCP connection or no answer within the timeout → no response
- a host name that does not resolve, or a port out of range → bad parameters
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

ACCEPTING, REJECTING, NO_RESPONSE, BAD_PARAMETERS = (
    "accepting",
    "rejecting",
    "no response",
    "bad parameters",
)
PG_ISREADY_CODES = {ACCEPTING: 0, REJECTING: 1, NO_RESPONSE: 2, BAD_PARAMETERS: 3}


@dataclass
class Ping:
    outcome: str
    detail: str
    latency_ms: float


def _startup_packet(user: str, database: str) -> bytes:
    body = struct.pack("!I", 196608)  # protocol 3.0
    for key, value in (("user", user), ("database", database), ("application_name", "moviectl")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def _drain(sock: socket.socket, n: int) -> None:
    """Read the rest of the server's message (bounded), so closing sends FIN, not RST."""
    with contextlib.suppress(OSError):
        while 0 < n <= 65536:
            chunk = sock.recv(n)
            if not chunk:
                return
            n -= len(chunk)


def _error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode(errors="replace")
    return fields


def _addresses(host: str, port: int) -> list[tuple[Any, ...]]:
    """(family, type, proto, address) to try for one libpq host: a name, an address, or a
    socket directory (``/…``; empty: the usual local ones)."""
    if not host or host.startswith("/"):
        dirs = [host] if host else ["/var/run/postgresql", "/tmp"]
        return [
            (socket.AF_UNIX, socket.SOCK_STREAM, 0, f"{d}/.s.PGSQL.{port}")
            for d in dirs
            if os.path.exists(f"{d}/.s.PGSQL.{port}") or host
        ]
    return [
        (family, kind, proto, addr)
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    ]


def ping(host: str, port: int, user: str, database: str, timeout: float = 5.0) -> Ping:
    """Ask each of libpq's hosts (comma-separated) in turn; the first answer wins."""
    result = None
    for one in host.split(",") if host else [""]:
        result = _ping_one(one, port, user, database, timeout)
        if result.outcome in (ACCEPTING, REJECTING):
            return result
    assert result is not None
    return result


def _ping_one(host: str, port: int, user: str, database: str, timeout: float) -> Ping:
    started = time.perf_counter()

    def done(outcome: str, detail: str) -> Ping:
        return Ping(outcome, detail, round((time.perf_counter() - started) * 1000, 2))

    if not 0 < port < 65536:
        return done(BAD_PARAMETERS, f"port {port} is out of range")
    try:
        infos = _addresses(host, port)
    except (socket.gaierror, UnicodeError):
        return done(BAD_PARAMETERS, f"host name {host!r} does not resolve")
    last = "no address"
    deadline = started + timeout
    for family, kind, proto, addr in infos:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return done(NO_RESPONSE, f"no answer from {host}:{port} within {timeout:g}s")
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(addr)
                sock.sendall(_startup_packet(user, database))
                head = sock.recv(5)
                if len(head) < 5:
                    last = "the server closed the connection"
                    continue
                kind_byte, length = head[:1], struct.unpack("!I", head[1:5])[0]
                if kind_byte == b"E":
                    payload = b""
                    while len(payload) < length - 4:
                        chunk = sock.recv(length - 4 - len(payload))
                        if not chunk:
                            break
                        payload += chunk
                    fields = _error_fields(payload)
                    if fields.get("C") == "57P03":
                        return done(REJECTING, fields.get("M", "the server rejects connections"))
                    # an error about this login still means the server accepts connections
                    return done(ACCEPTING, f"server answered: {fields.get('M', '')}".strip())
                _drain(sock, length - 4)  # unread bytes would turn our close into a reset
                # Hang up without a word, as libpq's PQping does: the server logs nothing
                # for a client that leaves at the password stage (a Terminate message
                # mid-SASL would be a FATAL line per probe).
                return done(ACCEPTING, f"accepting connections on {host}:{port}")
        except TimeoutError:
            return done(NO_RESPONSE, f"no answer from {host}:{port} within {timeout:g}s")
        except OSError as exc:
            last = exc.strerror or str(exc)
    return done(NO_RESPONSE, f"{host}:{port}: {last.lower()}")
