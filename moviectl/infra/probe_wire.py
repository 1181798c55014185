"""The probe's wire (``infra/probe.py``): protocol messages, and libpq's ssl* options as an
``ssl.SSLContext`` (``ssl`` is imported only when a server agrees to TLS: a plaintext probe
never loads it).

``verify-ca`` checks the chain against ``sslrootcert`` (``system``: the system store);
``verify-full`` also the host name (the ``host`` value, even when ``hostaddr`` says where to
connect); ``require`` verifies the chain when a root certificate is at hand, as libpq does
(``~/.postgresql/root.crt`` by default). A client certificate (``sslcert``/``sslkey``, default
``~/.postgresql/postgresql.crt``) is offered unless ``sslcertmode=disable``; an encrypted key
is never prompted for. ``sslcrl`` is not checked.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

SSL_REQUEST = (8).to_bytes(4, "big") + (80877103).to_bytes(4, "big")
TERMINATE = b"X\0\0\0\4"
MAX_MESSAGE = 1 << 20
VERSIONS = {"TLSv1": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2", "TLSv1.3": "TLSv1_3"}


class TlsFailure(Exception):
    """The handshake failed or the certificate did not verify (the reason, one line)."""


def handshake(sock: socket.socket, name: str, direct: bool, opts: dict[str, str]) -> ssl.SSLSocket:
    """TLS over ``sock`` (already past the SSLRequest, or fresh for ``direct``)."""
    import ssl

    try:
        ctx = context(opts)
        sni = name if name and opts["sslsni"] != "0" and not _is_ip(name) else None
        tls = ctx.wrap_socket(sock, server_hostname=name if ctx.check_hostname else sni)
    except ssl.SSLCertVerificationError as exc:
        raise TlsFailure(f"certificate verify failed: {exc.verify_message}") from exc
    except ssl.SSLError as exc:
        raise TlsFailure(exc.reason or str(exc)) from exc
    except (ValueError, OSError) as exc:
        if isinstance(exc, TimeoutError | ConnectionError):
            raise  # the network's failure, not the certificate's
        raise TlsFailure(str(exc)) from exc  # a missing root certificate, no host name
    if direct and tls.selected_alpn_protocol() != "postgresql":
        tls.close()
        raise TlsFailure("the server did not choose ALPN postgresql (direct TLS)")
    return tls


def context(opts: dict[str, str]) -> ssl.SSLContext:
    """libpq's TLS settings as an ``SSLContext`` (``check_hostname`` for verify-full)."""
    import ssl

    mode, home = opts["sslmode"], Path.home() / ".postgresql"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["postgresql"])  # as libpq 17 does, and direct TLS needs
    ctx.minimum_version = ssl.TLSVersion[VERSIONS.get(opts["ssl_min_protocol_version"], "TLSv1_2")]
    if opts["ssl_max_protocol_version"] in VERSIONS:
        ctx.maximum_version = ssl.TLSVersion[VERSIONS[opts["ssl_max_protocol_version"]]]
    root = opts["sslrootcert"] or str(home / "root.crt")
    verify = mode in ("verify-ca", "verify-full")
    if verify or (mode == "require" and (root == "system" or os.path.exists(root))):
        ctx.verify_mode = ssl.CERT_REQUIRED
        if root == "system":
            ctx.load_default_certs()
        elif not os.path.exists(root):  # name it, as libpq does (ssl's error does not)
            raise ValueError(
                f'root certificate file "{root}" does not exist: give sslrootcert=FILE, '
                "sslrootcert=system, or a weaker sslmode"
            )
        else:
            ctx.load_verify_locations(cafile=root)
    cert = opts["sslcert"] or str(home / "postgresql.crt")
    if opts["sslcertmode"] != "disable" and os.path.exists(cert):
        key = opts["sslkey"] or str(home / "postgresql.key")
        ctx.load_cert_chain(cert, key, password=lambda: b"")  # never a prompt
    ctx.check_hostname = mode == "verify-full"
    return ctx


def _is_ip(name: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in name else socket.AF_INET, name)
    except OSError:
        return False
    return True


def startup_packet(user: str, database: str) -> bytes:
    body = (196608).to_bytes(4, "big")  # protocol 3.0
    for key, value in (("user", user), ("database", database), ("application_name", "moviectl")):
        body += key.encode() + b"\0" + value.encode() + b"\0"
    body += b"\0"
    return (len(body) + 4).to_bytes(4, "big") + body


def exactly(sock: Any, n: int, deadline: float | None = None) -> bytes:
    """``n`` bytes, by ``deadline`` (``time.monotonic()``) if given: a socket's timeout is
    per read, and a server that trickles bytes must not outlast connect_timeout."""
    data = b""
    while len(data) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out")
            sock.settimeout(left)
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError(0, "the server closed the connection")
        data += chunk
    return data


def message(sock: Any, tag: bytes = b"", deadline: float | None = None) -> tuple[bytes, bytes]:
    """One whole message (its tag, its payload); ``tag`` when already read."""
    head = tag + exactly(sock, 5 - len(tag), deadline)
    length = int.from_bytes(head[1:5], "big")
    if not 4 <= length <= MAX_MESSAGE:
        raise ConnectionError("not a PostgreSQL server (bad message length)")
    return head[:1], exactly(sock, length - 4, deadline)


def pending(sock: socket.socket) -> bool:
    """Bytes after the server's "S": libpq refuses them (CVE-2021-23222)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout, Python would wait for the bytes
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except (BlockingIOError, InterruptedError):
        return False
    finally:
        sock.settimeout(timeout)


def close(sock: Any) -> None:
    """Close as libpq does: a TLS close_notify first (bounded), then the socket. Whole
    messages were read, so the close is a FIN, never a reset (a LOG line)."""
    if hasattr(sock, "unwrap"):
        try:
            sock.settimeout(1.0)
            sock.unwrap()
        except (OSError, ValueError):
            pass
    sock.close()
