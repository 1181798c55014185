"""Connection info the way libpq reads it, in the standard library (the hot path uses it).

``parse_db_url`` accepts what libpq accepts: ``postgresql://`` URIs (percent-encoding,
``?password=``, ``?host=/socket/dir``, several ``host:port`` pairs, every libpq keyword) and
``key=value`` strings (quoting and escapes as libpq). It follows libpq's own rules, so a test
holds it to psycopg's ``conninfo_to_dict`` (libpq's parser) on the same inputs; it does not
import psycopg, which would cost the ``health --live`` fast path ~160 ms.

``DbTarget`` is the one representation that flows everywhere: settings, engines, raw
connections, child tools. Its displayed form is built from its parts without the password;
errors never echo any part of the input (it may hold a password).

``DEFAULTS`` holds the connection settings' defaults: ``Settings`` and the
``health --live`` fast path both read them from here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlencode

from moviectl.infra.errors import ConfigError

APP_NAME = "moviectl"
ENV_PREFIX = "MOVIE_"
_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}
DEFAULTS: dict[str, Any] = {
    "db_host": "127.0.0.1",
    "db_port": 5432,
    "db_name": "movies",
    "db_user": "movie",
    "db_password": "movie",
    "connect_timeout": 5,
}


# Every connection, moviectl's own and its child tools', notices a dead host or a cut
# network: keepalive probes after 10 s idle (3 x 5 s), and unacknowledged data fails
# after 30 s. A paused server process is caught by infra/watchdog.py instead.
TCP_LIVENESS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def read_dotenv(path: Path) -> dict[str, str | None]:
    """The keys and values of a .env file ({} when there is none): one reader for all.

    Quoting follows the shell and dotenv's own rules: ``${VAR}`` is expanded in unquoted and
    double-quoted values, never in single-quoted ones (a password may contain ``${``).
    """
    if not path.is_file():
        return {}
    import io

    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid UTF-8 (byte {exc.start})", hint=f"re-encode {path} as UTF-8"
        ) from None
    values: dict[str, str | None] = {}
    for binding in parse_stream(io.StringIO(text)):
        if binding.key is None:
            continue
        raw = (
            binding.original.string.split("=", 1)[1].lstrip()
            if "=" in binding.original.string
            else ""
        )
        if binding.value is None or raw.startswith("'"):
            values[binding.key] = binding.value
            continue
        env = {**os.environ, **values}  # as python-dotenv: the file's own keys win
        values[binding.key] = "".join(atom.resolve(env) for atom in parse_variables(binding.value))
    return values


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
TLS_MODES = ("require", "verify-ca", "verify-full")
_URI_PREFIXES = ("postgresql://", "postgres://")


def _bad(name: str, problem: str) -> ConfigError:
    """A parse error that names the problem and never the input (it may hold a password)."""
    return ConfigError(
        f"malformed {name}: {problem}",
        hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE or key=value pairs; "
        "percent-encode special characters in the password (/ → %2F, @ → %40)",
    )


def _decode(text: str, name: str, what: str) -> str:
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        raise _bad(name, f"invalid percent-encoding in the {what}")
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise _bad(name, f"the {what} is not valid UTF-8 after percent-decoding") from None


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
                raise _bad(name, "an IPv6 address lacks its closing ']'")
            host, after = item[1:end], item[end + 1 :]
            if after and not after.startswith(":"):
                raise _bad(name, "unexpected characters after an IPv6 address")
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
        raise _bad(name, "an '@' after the host: is there a '/' in the password? (write it %2F)")
    if slash and path:
        out["dbname"] = _decode(path, name, "database name")
    for pair in query.split("&") if query else []:
        key, eq, value = pair.partition("=")
        if not eq:
            raise _bad(name, "a query parameter has no '=value'")
        key, value = _decode(key, name, "query"), _decode(value, name, "query")
        if key == "ssl" and value == "true":  # libpq's JDBC compatibility
            key, value = "sslmode", "require"
        if key not in LIBPQ_KEYWORDS:
            raise _bad(name, f"unknown connection option {key!r}")
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
            raise _bad(name, "expected key=value pairs")
        i += 1
        while i < n and text[i].isspace():
            i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    raise _bad(name, "an unterminated quoted value")
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
            raise _bad(name, f"unknown connection option {key!r}")
        out[key] = "".join(value)


def parse_conninfo(text: str, name: str = "URL") -> dict[str, str]:
    """libpq's keywords and values of a URI or a key=value string (libpq's rules)."""
    text = text.strip()
    if not text:
        raise _bad(name, "it is empty")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise _bad(name, "the scheme must be postgresql:// or postgres://")
        return _parse_uri("postgresql://" + text.split("://", 1)[1], name)
    if "=" in text:
        return _parse_keywords(text, name)
    raise _bad(name, "neither a postgresql:// URL nor key=value pairs")


def _port_number(text: str, name: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad(name, "the port must be a number from 1 to 65535")
    return int(text)


def _os_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "postgres"


def target_from_params(values: dict[str, str], name: str = "URL") -> DbTarget:
    """A ``DbTarget`` from libpq keywords (what ``parse_conninfo`` returns)."""
    rest = dict(values)
    # what the string leaves out, libpq takes from PG* variables, then its defaults
    env = os.environ
    host = rest.pop("host", "") or rest.pop("hostaddr", "") or env.get("PGHOST", "")
    port_spec = rest.pop("port", "") or env.get("PGPORT", "")
    ports = port_spec.split(",") if port_spec else []
    port = _port_number(ports[0], name) if ports and ports[0] else 5432
    for extra in ports[1:]:
        if extra:
            _port_number(extra, name)
    user = rest.pop("user", "") or env.get("PGUSER", "") or _os_user()
    password = rest.pop("password", None)
    database = rest.pop("dbname", "") or env.get("PGDATABASE", "") or user
    rest.pop("sslpassword", None)  # never carried: ask libpq's prompt-less default
    if "connect_timeout" in rest and not rest["connect_timeout"].lstrip("-").isdigit():
        raise ConfigError(f"bad connect_timeout in {name}: not a whole number")
    return DbTarget(
        host=host,
        port=port,
        user=user,
        password=password or None,
        database=database,
        params=tuple(sorted(rest.items())),
        port_spec=port_spec if "," in port_spec else None,
    )


@dataclass(frozen=True)
class DbTarget:
    """Connection parameters of one database. ``password`` never shows in repr or URLs.

    ``host`` is libpq's host value: a name, an address, a socket directory (``/…``) or
    several, comma-separated. ``params`` holds every other libpq keyword (sslmode, …).
    """

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    database: str = "postgres"
    params: tuple[tuple[str, str], ...] = ()
    port_spec: str | None = None  # "5432,5433" for several hosts

    def with_database(self, database: str) -> DbTarget:
        return replace(self, database=database)

    @property
    def where(self) -> str:
        """``host:port/database``, for error messages."""
        return f"{self.host or 'local socket'}:{self.port}/{self.database}"

    @property
    def sslmode(self) -> str:
        """The sslmode in force: the URL's, else PGSSLMODE, else libpq's default ``prefer``."""
        return dict(self.params).get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"

    @property
    def wants_tls(self) -> bool:
        return self.sslmode in TLS_MODES

    def url(self, *, masked: bool = True, scheme: str = "postgresql") -> str:
        """The URL; ``masked`` shows ``***`` where the password is (built, not replaced)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + ("***" if masked else quote(self.password, safe=""))
        hosts = self.host.split(",")
        ports = (self.port_spec or str(self.port)).split(",")
        netloc = ",".join(
            (f"[{h}]" if ":" in h else quote(h, safe="")) + (f":{p}" if p else "")
            for h, p in zip(hosts, ports + [""] * (len(hosts) - len(ports)), strict=False)
        )
        shown = [(k, v) for k, v in self.params if k not in SECRET_KEYS]
        query = f"?{urlencode(shown, quote_via=quote)}" if shown else ""
        return f"{scheme}://{auth}@{netloc}/{quote(self.database, safe='')}{query}"

    def libpq_params(self, connect_timeout: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (password included: never print this)."""
        kw: dict[str, Any] = dict(self.params)
        kw.update(port=self.port_spec or self.port, user=self.user, dbname=self.database)
        if self.host:
            kw["host"] = self.host
        if self.password:
            kw["password"] = self.password
        kw.setdefault("application_name", APP_NAME)
        kw.setdefault("client_encoding", "UTF8")
        for key, value in TCP_LIVENESS.items():
            kw.setdefault(key, value)
        if connect_timeout is not None:
            kw["connect_timeout"] = connect_timeout
        return kw

    def child_conninfo(self, *, require_tls: bool = False) -> str:
        """The ``-d`` argument for pg_dump/pg_restore/psql/pgcli: the whole connection but
        the password (which travels in ``child_env``), TCP liveness included.

        ``require_tls``: moviectl's own connection is encrypted, so the child's must be too
        (``prefer`` would silently accept a plain one).
        """
        kw = self.libpq_params()
        kw.pop("password", None)
        kw.pop("client_encoding", None)
        if require_tls and not self.wants_tls:
            kw["sslmode"] = "require"
        return " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in kw.items())

    def child_env(self) -> dict[str, str]:
        """Environment additions for a child tool: the password (never on argv)."""
        return {"PGPASSWORD": self.password} if self.password else {}


def _conninfo_quote(value: str) -> str:
    """A libpq key=value value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_db_url(url: str, name: str = "URL") -> DbTarget:
    """Parse a PostgreSQL URL or key=value string; malformed input is a ``ConfigError``
    (exit 2) that names the problem and never echoes the input."""
    return target_from_params(parse_conninfo(url, name), name)


def mask_url(url: str) -> str:
    """The displayed form of a URL setting: parsed and rebuilt without the password, or,
    when it does not parse, nothing of it (it may hold a password)."""
    try:
        return parse_db_url(url).url(masked=True)
    except ConfigError:
        return "(unparseable: hidden, it may contain a password)"
