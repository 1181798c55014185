"""The pg_isready question, in the standard library only (it runs on the hot path).

It follows libpq's ``PQping`` (fe-connect.c), connection options included:

- encryption per ``sslmode``: ``disable`` plain; ``allow``/``prefer`` an SSLRequest, then
  plain if the server says no; ``require``/``verify-*`` an SSLRequest, and a server that says
  no (or a certificate that fails verification) ends the probe before the startup message,
  so the user and database names never travel in plaintext. ``sslnegotiation=direct``
  starts TLS at once (ALPN ``postgresql``). ``verify-ca`` checks the chain against
  ``sslrootcert``, ``verify-full`` the host name too (``host``, even with ``hostaddr``).
  Over a Unix socket there is no TLS, as in libpq.
- ``allow`` is probed as ``prefer``: libpq's plaintext-first attempt is a FATAL line per probe
  on a TLS-only server, and the verdict is the same either way.
- GSSAPI encryption: libpq tries it only with a Kerberos credential cache; this probe has no
  GSSAPI, so ``gssencmode=prefer`` is ``disable`` and ``require`` a bad parameter.
- ``hostaddr`` (connect there; names and checks use ``host``), several hosts and ports
  tried in order (``load_balance_hosts=random`` shuffles them), ``connect_timeout`` per address.
- the first answer decides, as in ``PQping``: an authentication request or an error but
  "cannot connect now" → accepting; SQLSTATE 57P03 → the next host, rejecting if it was the
  last; nothing → the next address or host, no response if it was the last. The probe never
  sends a password, so ``target_session_attrs`` counts only when a server lets it in without
  one (trust): a host of the wrong kind is then left for the next one, as libpq does.
- it leaves no line in the server log: it hangs up at the password stage (a Terminate there
  is a FATAL line), after a TLS close_notify (a bare FIN is an "SSL error" line).

A host name that does not resolve, or a port out of range, is a bad parameter (pg_isready
says "no response"): a setting's mistake, not an outage. ``reachable`` is the answer as
``health``'s reachable check (``health --live``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import ExitCode
from moviectl.infra.probe_wire import SSL_REQUEST, TERMINATE, close, exactly, message, pending
from moviectl.infra.probe_wire import startup_packet as _startup_packet

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget

ACCEPTING, REJECTING, NO_RESPONSE, BAD_PARAMETERS = (
    "accepting",
    "rejecting",
    "no response",
    "bad parameters",
)
PG_ISREADY_CODES = {ACCEPTING: 0, REJECTING: 1, NO_RESPONSE: 2, BAD_PARAMETERS: 3}
# the options libpq reads from the environment when the connection string leaves them out
ENV = {
    "hostaddr": "PGHOSTADDR",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslsni": "PGSSLSNI",
    "sslcertmode": "PGSSLCERTMODE",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
DEFAULTS = {"sslmode": "prefer", "sslnegotiation": "postgres", "target_session_attrs": "any"}


class Ping:
    """One answer: its outcome (``ACCEPTING`` …), a detail line and the latency."""

    __slots__ = ("detail", "latency_ms", "outcome")

    def __init__(self, outcome: str, detail: str, latency_ms: float) -> None:
        self.outcome, self.detail, self.latency_ms = outcome, detail, latency_ms

    def __repr__(self) -> str:
        return f"Ping({self.outcome!r}, {self.detail!r}, {self.latency_ms!r})"


class _Final(Exception):
    """An answer that ends the probe (libpq's ``error_return``, or a login)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome, self.detail = outcome, detail


class _NextHost(_Final):
    """An answer that sends libpq to the next host; the verdict if there is none."""


class _ServerError(_Final):
    """The server's error (not 57P03) to the startup message: accepting."""


class _BadParameters(Exception):
    pass


def reachable_target(t: DbTarget, timeout: float) -> tuple[str, str, int, dict[str, str]]:
    """``health``'s reachable check for a ``DbTarget``, its libpq options (sslmode,
    hostaddr, …) included: (``pass`` | ``fail``, detail, exit code, data)."""
    p = ping_target(t, timeout)
    if p.outcome == ACCEPTING:
        return "pass", f"{t.host}:{t.port} accepting connections", 0, {"pg_isready": p.outcome}
    code = int(ExitCode.FAILED if p.outcome == REJECTING else ExitCode.UNREACHABLE)
    return "fail", f"{p.detail} ({p.outcome})", code, {"pg_isready": p.outcome}


def ping_target(t: DbTarget, timeout: float = 5.0) -> Ping:
    """``ping`` for a ``DbTarget``, its libpq options included."""
    return ping(
        t.host, t.port, t.user, t.database, timeout, options=dict(t.params), port_spec=t.port_spec
    )


def ping(
    host: str,
    port: int,
    user: str,
    database: str,
    timeout: float = 5.0,
    *,
    options: Mapping[str, str] | None = None,
    port_spec: str | None = None,
) -> Ping:
    """Ask libpq's hosts (comma-separated) in turn, as ``PQping`` does."""
    started = time.perf_counter()

    def done(outcome: str, detail: str) -> Ping:
        return Ping(outcome, detail, round((time.perf_counter() - started) * 1000, 2))

    opts = {k: (options or {}).get(k) or os.environ.get(v, "") for k, v in ENV.items()}
    opts.update({k: v for k, v in DEFAULTS.items() if not opts[k]})
    try:
        hosts = _hosts(host, port, port_spec, opts)
    except _BadParameters as exc:
        return done(BAD_PARAMETERS, str(exc))
    if opts["load_balance_hosts"] == "random":
        import random  # only here: every container healthcheck runs this path

        random.shuffle(hosts)
    tsa = opts["target_session_attrs"]
    passes = ["standby", "any"] if tsa == "prefer-standby" else [tsa]
    verdict = _NextHost(NO_RESPONSE, "no host to try")
    for wanted in passes:
        for name, addr, p in hosts:
            here = f"accepting connections on {name or addr}:{p}"
            try:
                _ping_host(name, addr, p, user, database, timeout, opts, wanted)
            except _NextHost as exc:
                verdict = exc
                continue
            except _BadParameters as exc:
                if len(hosts) == 1:  # one host: a setting's mistake (see the docstring)
                    return done(BAD_PARAMETERS, str(exc))
                verdict = _NextHost(NO_RESPONSE, str(exc))
                continue
            except _Final as exc:
                return done(exc.outcome, exc.detail or here)
            return done(ACCEPTING, here)
    return done(verdict.outcome, verdict.detail)


def _hosts(
    host: str, port: int, port_spec: str | None, opts: dict[str, str]
) -> list[tuple[str, str, int]]:
    """(host, hostaddr, port) per libpq host, or ``_BadParameters`` (libpq's "no attempt")."""
    names = host.split(",") if host else [""]
    addrs = opts["hostaddr"].split(",") if opts["hostaddr"] else [""] * len(names)
    if not host and len(addrs) > 1:
        names = [""] * len(addrs)
    ports = (port_spec or str(port)).split(",")
    ports = ports * len(names) if len(ports) == 1 else ports
    if len(addrs) != len(names) or len(ports) != len(names):
        raise _BadParameters(f"{len(names)} hosts, {len(addrs)} hostaddr and {len(ports)} ports")
    if opts["gssencmode"] == "require":
        raise _BadParameters("gssencmode=require: this probe does not speak GSSAPI")
    if opts["sslnegotiation"] == "direct" and opts["sslmode"] not in _REQUIRED:
        raise _BadParameters("sslnegotiation=direct needs sslmode=require or stronger")
    out = []
    for name, addr, p in zip(names, addrs, ports, strict=True):
        if not (p or "5432").isdecimal() or not 0 < int(p or "5432") < 65536:
            raise _BadParameters(f"port {p} is out of range")
        out.append((name, addr, int(p or "5432")))
    return out


_REQUIRED = ("require", "verify-ca", "verify-full")


def _addresses(host: str, hostaddr: str, port: int) -> list[tuple[Any, ...]]:
    """(family, type, proto, address) to try for one libpq host: ``hostaddr``, a name, an
    address, or a socket directory (``/…``; empty: the usual local ones)."""
    if not hostaddr and (not host or host.startswith("/")):
        dirs = [host] if host else ["/var/run/postgresql", "/tmp"]
        return [
            (socket.AF_UNIX, socket.SOCK_STREAM, 0, f"{d}/.s.PGSQL.{port}")
            for d in dirs
            if os.path.exists(f"{d}/.s.PGSQL.{port}") or host
        ]
    where, flags = (hostaddr, socket.AI_NUMERICHOST) if hostaddr else (host, 0)
    try:
        return [
            (family, kind, proto, addr)
            # an ASCII name needs no IDNA encoding: given as bytes, the idna codec is not loaded
            for family, kind, proto, _, addr in socket.getaddrinfo(
                where.encode() if where.isascii() else where, port, 0, socket.SOCK_STREAM, 0, flags
            )
        ]
    except (socket.gaierror, UnicodeError):
        what = "hostaddr" if hostaddr else "host name"
        raise _BadParameters(f"{what} {where!r} does not resolve") from None


def _ping_host(
    name: str,
    hostaddr: str,
    port: int,
    user: str,
    database: str,
    timeout: float,
    opts: dict[str, str],
    wanted: str,
) -> None:
    """One libpq host: returns when it let us in and is of the ``wanted`` kind, else raises
    ``_Final`` (the verdict) or ``_NextHost`` (try the next host)."""
    where = f"{name or hostaddr}:{port}"
    last = "no address"
    for info in _addresses(name, hostaddr, port):
        deadline = time.monotonic() + timeout  # connect_timeout is per address, as in libpq
        plain = opts["sslmode"] == "disable" or info[0] == socket.AF_UNIX
        for encrypt in [False] if plain else [True, False]:
            try:
                params = _attempt(info, name, where, encrypt, deadline, user, database, opts)
            except _Fallback:  # prefer: the server offers no TLS, or TLS failed
                continue
            except TimeoutError:
                last = f"no answer within {timeout:g}s"
                break
            except OSError as exc:
                last = (exc.strerror or str(exc)).lower()
                break
            if not _session_matches(params, wanted):
                raise _NextHost(ACCEPTING, f"{where} is not a {wanted} server")
            return
    raise _NextHost(NO_RESPONSE, f"{where}: {last}")


class _Fallback(Exception):
    """``prefer``: retry this address in plaintext (libpq's non-SSL retry)."""


def _attempt(
    info: tuple[Any, ...],
    name: str,
    where: str,
    encrypt: bool,
    deadline: float,
    user: str,
    database: str,
    opts: dict[str, str],
) -> dict[str, str]:
    """One connection: negotiate, send the startup message, read the first answer. Returns
    the server's parameters when it let us in; raises ``_Final``/``_NextHost`` otherwise."""
    family, kind, proto, addr = info
    required = opts["sslmode"] in _REQUIRED
    sock: Any = socket.socket(family, kind, proto)
    try:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.connect(addr)
        if encrypt:
            direct = opts["sslnegotiation"] == "direct"
            if not direct:
                sock.sendall(SSL_REQUEST)
                answer = exactly(sock, 1, deadline)
                if answer == b"E":  # a server from before SSLRequest: what libpq does
                    _raise_error(message(sock, answer, deadline)[1])
                if answer != b"S":
                    if required:
                        raise _Final(NO_RESPONSE, f"{where}: the server does not offer TLS")
                    encrypt = False
                elif pending(sock):
                    raise _Final(NO_RESPONSE, f"{where}: unencrypted data after the TLS answer")
            if encrypt:
                sock.settimeout(max(0.001, deadline - time.monotonic()))  # the rest of it
                sock = _handshake(sock, name, direct, required, opts, where)
        sock.sendall(_startup_packet(user, database))
        try:
            return _answer(sock, where, deadline)
        except _ServerError:
            if encrypt and not required:  # prefer: libpq retries without TLS
                raise _Fallback from None
            raise
    finally:
        close(sock)


def _handshake(
    sock: socket.socket, name: str, direct: bool, required: bool, opts: dict[str, str], where: str
) -> Any:
    from moviectl.infra.probe_wire import TlsFailure, handshake

    try:
        return handshake(sock, name, direct, opts)
    except TlsFailure as exc:
        if not required:
            raise _Fallback from exc
        raise _Final(NO_RESPONSE, f"{where}: TLS failed: {exc}") from exc


def _raise_error(payload: bytes, first: bool = False) -> None:
    fields = {}
    for part in payload.split(b"\0"):
        if part:  # whatever answered wrote it: no control character, no second line
            text = part[1:201].decode(errors="replace")
            fields[chr(part[0])] = "".join(c if c.isprintable() else "?" for c in text)
    if fields.get("C") == "57P03":  # libpq tries the next host
        raise _NextHost(REJECTING, fields.get("M") or "the server rejects connections")
    # an error about this login still means the server accepts connections
    detail = f"server answered: {fields.get('M', '')}".strip()
    raise (_ServerError if first else _Final)(ACCEPTING, detail)


def _answer(sock: Any, where: str, deadline: float) -> dict[str, str]:
    """The server's first answer to the startup message: a request for a password ends the
    probe (accepting), an error raises its verdict; a login's parameters are returned."""
    tag, payload = message(sock, deadline=deadline)
    if tag == b"E":
        _raise_error(payload, first=True)
    if tag != b"R":
        raise _Final(NO_RESPONSE, f"{where}: not a PostgreSQL server")
    if payload[:4] != b"\0\0\0\0":
        # Hang up without a word, as libpq's PQping does without a password: the server
        # logs nothing for a client that leaves at the password stage.
        raise _Final(ACCEPTING, "")
    params: dict[str, str] = {}
    while True:  # let in (trust): read up to ReadyForQuery, then say goodbye
        tag, payload = message(sock, deadline=deadline)
        if tag == b"E":
            _raise_error(payload)
        if tag == b"S":
            key, _, value = payload.rstrip(b"\0").partition(b"\0")
            params[key.decode(errors="replace")] = value.decode(errors="replace")
        if tag == b"Z":
            sock.sendall(TERMINATE)
            return params


def _session_matches(params: dict[str, str], wanted: str) -> bool:
    """target_session_attrs from the parameters a server reports (14+; older ones pass)."""
    standby = params.get("in_hot_standby")
    read_only = standby == "on" or params.get("default_transaction_read_only") == "on"
    if standby is None or wanted == "any":
        return True
    return {
        "read-write": not read_only,
        "read-only": read_only,
        "primary": standby == "off",
        "standby": standby == "on",
    }[wanted]
