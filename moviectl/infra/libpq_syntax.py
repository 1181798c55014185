"""libpq's connection string syntax: URIs and key=value strings, and the displayed URL.

``parse_conninfo`` reads both forms by libpq's own rules (held to psycopg's
``conninfo_to_dict``, i.e. libpq's parser, by tests/infra/test_conninfo.py);
``target_fields`` fills in what a string leaves out as libpq does (``PG*`` variables, then
its defaults); ``build_url`` is the displayed URL. ``conninfo.DbTarget`` is built from these
fields. Errors name the problem and never echo the input: it may hold a password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote as _quote
from urllib.parse import unquote

from moviectl.infra.errors import ConfigError

# libpq's connection keywords (PostgreSQL 17); anything else is an error, as in libpq.
LIBPQ_KEYWORDS = frozenset(
    """host hostaddr port dbname user password passfile require_auth channel_binding
    connect_timeout client_encoding options application_name fallback_application_name
    keepalives keepalives_idle keepalives_interval keepalives_count tcp_user_timeout
    replication gssencmode sslmode sslnegotiation sslcompression sslcert sslkey
    sslcertmode sslpassword sslrootcert sslcrl sslcrldir sslsni requirepeer
    ssl_min_protocol_version ssl_max_protocol_version krbsrvname gsslib gssdelegation
    service target_session_attrs load_balance_hosts""".split()
)
SECRET_KEYS = frozenset({"password", "sslpassword"})
# keywords whose values libpq checks against a list when it connects (a bad one is a
# setting's mistake: refused here, exit 2, rather than a connection failure later)
ENUM_VALUES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "target_session_attrs": (
        "any",
        "read-write",
        "read-only",
        "primary",
        "standby",
        "prefer-standby",
    ),
    "load_balance_hosts": ("disable", "random"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
}
TLS_MODES = ("require", "verify-ca", "verify-full")
_HEX = frozenset("0123456789abcdefABCDEF")
_SCHEME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


def bad_conninfo(name: str, problem: str) -> ConfigError:
    """A parse error that names the problem and never the input (it may hold a password)."""
    return ConfigError(
        f"malformed {name}: {problem}",
        hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE or key=value pairs; "
        "percent-encode special characters in the password (/ → %2F, @ → %40)",
    )


def _decode(text: str, name: str, what: str) -> str:
    """Percent-decoding as libpq does it: a malformed escape, %00 or bytes that are not
    UTF-8 are errors (``unquote`` alone would pass them through)."""
    at = text.find("%")
    while at >= 0:
        if at + 3 > len(text) or not _HEX.issuperset(text[at + 1 : at + 3]):
            raise bad_conninfo(name, f"invalid percent-encoding in the {what}")
        if text[at + 1 : at + 3] == "00":
            raise bad_conninfo(name, f"%00 (a NUL character) in the {what}")
        at = text.find("%", at + 3)
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise bad_conninfo(name, f"the {what} is not valid UTF-8 after percent-decoding") from None


def quote(text: str) -> str:
    """Every character but RFC 3986's unreserved ones as %XX."""
    return _quote(text, safe="")


def _parse_uri(text: str, name: str) -> dict[str, str]:
    _, _, rest = text.partition("://")
    # libpq: the user info ends at the first '@' met before any '/' ('?' and '#' included)
    cut = min([i for i in (rest.find("@"), rest.find("/")) if i >= 0], default=-1)
    out: dict[str, str] = {}
    if cut >= 0 and rest[cut] == "@":
        userinfo, rest = rest[:cut], rest[cut + 1 :]
        user, colon, password = userinfo.partition(":")
        if user:
            out["user"] = _decode(user, name, "user name")
        if colon:
            out["password"] = _decode(password, name, "password")
    rest, _, query = rest.partition("?")
    hostspec, slash, path = rest.partition("/")
    hosts, ports = [], []
    for item in hostspec.split(",") if hostspec else []:
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise bad_conninfo(name, "an IPv6 address lacks its closing ']'")
            host, after = item[1:end], item[end + 1 :]
            if after and not after.startswith(":"):
                raise bad_conninfo(name, "unexpected characters after an IPv6 address")
            port = after[1:]
        else:
            host, _, port = item.partition(":")
        hosts.append(_decode(host, name, "host"))
        ports.append(_decode(port, name, "port"))
    if any(hosts):
        out["host"] = ",".join(hosts)
    if any(ports):
        out["port"] = ",".join(ports)
    if "@" in path or "@" in hostspec:
        raise bad_conninfo(
            name, "an '@' after the host: is there a '/' in the password? (write it %2F)"
        )
    if slash and path:
        out["dbname"] = _decode(path, name, "database name")
    for pair in query.split("&") if query else []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise bad_conninfo(name, "a query parameter has no '=value'")
        key, value = _decode(key, name, "query"), _decode(value, name, "query")
        if key == "ssl" and value == "true":  # libpq's JDBC compatibility
            key, value = "sslmode", "require"
        if key not in LIBPQ_KEYWORDS:
            raise bad_conninfo(name, f"unknown connection option {key!r}")
        out[key] = value
    return out


def _parse_keywords(text: str, name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        while i < n and text[i].isspace():
            i += 1
        if i >= n or text[i] != "=" or not key:
            raise bad_conninfo(name, "expected key=value pairs")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise bad_conninfo(name, "an unterminated quoted value")
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    value.append(text[i])
                    i += 1
        else:
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    value.append(text[i + 1])
                    i += 2
                else:
                    value.append(text[i])
                    i += 1
        if key not in LIBPQ_KEYWORDS:
            raise bad_conninfo(name, f"unknown connection option {key!r}")
        out[key] = "".join(value)


def parse_conninfo(text: str, name: str = "URL") -> dict[str, str]:
    """libpq's keywords and values of a URI or a key=value string (libpq's rules)."""
    text = text.strip()
    if not text:
        raise bad_conninfo(name, "it is empty")
    # a URI starts with its scheme; a key=value string may hold "://" in a value
    head, sep, _ = text.partition("://")
    scheme = head.lower() if sep and head[:1].isalpha() and _SCHEME.issuperset(head) else ""
    if scheme:
        if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise bad_conninfo(name, "the scheme must be postgresql:// or postgres://")
        return _parse_uri("postgresql://" + text.split("://", 1)[1], name)
    if "=" in text:
        return _parse_keywords(text, name)
    raise bad_conninfo(name, "neither a postgresql:// URL nor key=value pairs")


def port_number(text: str, name: str) -> int:
    """A port as libpq would take it, but 0 and out-of-range ports are refused."""
    if not (text.isascii() and text.isdecimal() and len(text) <= 5) or not 0 < int(text) < 65536:
        raise bad_conninfo(name, "the port must be a number from 1 to 65535")
    return int(text)


def _whole(text: str) -> bool:
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdecimal() and len(digits) <= 9


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def target_fields(values: dict[str, str], name: str = "URL") -> dict[str, Any]:
    """``DbTarget``'s fields from libpq keywords (what ``parse_conninfo`` returns)."""
    rest = dict(values)
    # what the string leaves out, libpq takes from PG* variables, then its defaults
    env = os.environ
    host = rest.pop("host", "") or rest.pop("hostaddr", "") or env.get("PGHOST", "")
    port_spec = rest.pop("port", "") or env.get("PGPORT", "")
    ports = port_spec.split(",") if port_spec else []
    port = port_number(ports[0], name) if ports and ports[0] else 5432
    for extra in ports[1:]:
        if extra:
            port_number(extra, name)
    user = rest.pop("user", "") or env.get("PGUSER", "") or _os_user()
    password = rest.pop("password", None)
    database = rest.pop("dbname", "") or env.get("PGDATABASE", "") or user
    if any(len(h) > 255 for h in host.split(",")):
        raise bad_conninfo(name, "a host name longer than 255 characters")
    rest.pop("sslpassword", None)  # never carried: ask libpq's prompt-less default
    for key, allowed in ENUM_VALUES.items():
        if key in rest and rest[key] not in allowed:
            raise bad_conninfo(name, f"{key} must be one of {', '.join(allowed)}")
    if "connect_timeout" in rest and not _whole(rest["connect_timeout"]):
        raise ConfigError(f"bad connect_timeout in {name}: not a whole number")
    return {
        "host": host,
        "port": port,
        "user": user,
        "password": password or None,
        "database": database,
        "params": tuple(sorted(rest.items())),
        "port_spec": port_spec if "," in port_spec else None,
    }


def build_url(fields: Mapping[str, Any], *, masked: bool = True, scheme: str = "postgresql") -> str:
    """The URL of ``DbTarget`` fields; ``masked`` shows ``***`` where the password is (built,
    not replaced), and no secret keyword ever shows."""
    auth = quote(fields["user"])
    if fields.get("password"):
        auth += ":" + ("***" if masked else quote(fields["password"]))
    hosts = fields["host"].split(",")
    ports = (fields.get("port_spec") or str(fields["port"])).split(",")
    netloc = ",".join(
        (f"[{h}]" if ":" in h else quote(h)) + (f":{p}" if p else "")
        for h, p in zip(hosts, ports + [""] * (len(hosts) - len(ports)), strict=False)
    )
    shown = [(k, v) for k, v in fields.get("params", ()) if k not in SECRET_KEYS]
    query = "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in shown) if shown else ""
    return f"{scheme}://{auth}@{netloc}/{quote(fields['database'])}{query}"
