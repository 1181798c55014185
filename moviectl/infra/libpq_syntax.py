"""libpq's connection string syntax, and the settings' rules down to a connection's fields.

``parse_conninfo`` reads URIs and key=value strings by libpq's own rules (held to psycopg's
``conninfo_to_dict``, i.e. libpq's parser, by tests/infra/test_conninfo.py); ``target_fields``
fills in what a string leaves out as libpq does (``PG*`` variables, then its defaults);
``raw_settings`` and ``resolve_fields`` read ``MOVIE_*`` (environment over ``.env``) by the
rules ``Settings`` uses; ``build_url`` is the displayed URL. ``conninfo.DbTarget`` is built
from these fields: this module is its pydantic- and dataclass-free floor.

The ``health --live`` fast path imports this module alone to read the settings, so nothing
heavy is imported here at import time: no ``re``, ``urllib``, ``pathlib``, ``typing``,
``dataclasses`` or ``errors`` (enum), each several milliseconds of a probe that runs every few
seconds; errors are built on demand. Errors name the problem and never echo the input: it
may hold a password.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (~7 ms)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

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
TLS_MODES = ("require", "verify-ca", "verify-full")
ENV_PREFIX = "MOVIE_"
DEFAULTS: dict[str, Any] = {
    "db_host": "127.0.0.1",
    "db_port": 5432,
    "db_name": "movies",
    "db_user": "movie",
    "db_password": "movie",
    "connect_timeout": 5,
}
MAX_CONNECT_TIMEOUT = 3600
_HEX = frozenset("0123456789abcdefABCDEF")
# what urllib.parse.quote(..., safe="") leaves as it is (RFC 3986's unreserved characters)
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


def config_error(message: str, hint: str | None = None) -> ConfigError:
    """A ``ConfigError`` (exit 2); ``errors`` is imported only when there is one."""
    from moviectl.infra.errors import ConfigError

    return ConfigError(message, hint=hint)


def bad_conninfo(name: str, problem: str) -> ConfigError:
    """A parse error that names the problem and never the input (it may hold a password)."""
    return config_error(
        f"malformed {name}: {problem}",
        hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE or key=value pairs; "
        "percent-encode special characters in the password (/ → %2F, @ → %40)",
    )


def _decode(text: str, name: str, what: str) -> str:
    """Percent-decoding as ``urllib.parse.unquote(text, errors="strict")``, with errors."""
    if "%" not in text:
        return text
    at = text.find("%")
    while at >= 0:
        if at + 3 > len(text) or not _HEX.issuperset(text[at + 1 : at + 3]):
            raise bad_conninfo(name, f"invalid percent-encoding in the {what}")
        at = text.find("%", at + 3)
    parts, i = [], 0
    while (at := text.find("%", i)) >= 0:
        parts.append(text[i:at])
        raw = bytearray()
        while text.startswith("%", at):
            raw.append(int(text[at + 1 : at + 3], 16))
            at += 3
        try:
            parts.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise bad_conninfo(
                name, f"the {what} is not valid UTF-8 after percent-decoding"
            ) from None
        i = at
    parts.append(text[i:])
    return "".join(parts)


def quote(text: str) -> str:
    """``urllib.parse.quote(text, safe="")``: every byte but the unreserved ones as %XX."""
    if _UNRESERVED.issuperset(text):
        return text
    return "".join(
        c if c in _UNRESERVED else "".join(f"%{b:02X}" for b in c.encode()) for c in text
    )


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
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme:
        if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
            raise bad_conninfo(name, "the scheme must be postgresql:// or postgres://")
        return _parse_uri("postgresql://" + text.split("://", 1)[1], name)
    if "=" in text:
        return _parse_keywords(text, name)
    raise bad_conninfo(name, "neither a postgresql:// URL nor key=value pairs")


def port_number(text: str, name: str) -> int:
    """A port as libpq would take it, but 0 and out-of-range ports are refused."""
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise bad_conninfo(name, "the port must be a number from 1 to 65535")
    return int(text)


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
    rest.pop("sslpassword", None)  # never carried: ask libpq's prompt-less default
    if "connect_timeout" in rest and not rest["connect_timeout"].lstrip("-").isdigit():
        raise config_error(f"bad connect_timeout in {name}: not a whole number")
    return {
        "host": host,
        "port": port,
        "user": user,
        "password": password or None,
        "database": database,
        "params": tuple(sorted(rest.items())),
        "port_spec": port_spec if "," in port_spec else None,
    }


def resolve_fields(values: Mapping[str, str | None]) -> dict[str, Any]:
    """The app database's fields from raw setting values (keys: database_url, db_host,
    db_port, db_name, db_user, db_password; None = unset): the one set of rules for the
    full CLI (``Settings.target``, through ``conninfo.resolve_target``) and the
    ``health --live`` fast path."""
    url = values.get("database_url")
    if url is not None:
        return target_fields(parse_conninfo(url, "MOVIE_DATABASE_URL"), "MOVIE_DATABASE_URL")

    def get(key: str) -> str:
        value = values.get(key)
        return str(DEFAULTS[key] if value is None else value)

    for key in ("db_host", "db_name", "db_user"):
        if not get(key).strip():
            raise config_error(f"bad value for {ENV_PREFIX}{key.upper()}: it is empty")
    port = get("db_port").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise config_error(f"bad value for {ENV_PREFIX}DB_PORT: a number from 1 to 65535")
    return {
        "host": get("db_host"),
        "port": int(port),
        "user": get("db_user"),
        "password": get("db_password") or None,
        "database": get("db_name"),
    }


def connect_timeout_of(value: str | None) -> int:
    """MOVIE_CONNECT_TIMEOUT's rule: whole seconds from 1 to an hour."""
    text = str(DEFAULTS["connect_timeout"] if value is None else value).strip()
    if not text.isdigit() or not 0 < int(text) <= MAX_CONNECT_TIMEOUT:
        limit = MAX_CONNECT_TIMEOUT
        raise config_error(f"bad value for {ENV_PREFIX}CONNECT_TIMEOUT: 1 to {limit} seconds")
    return int(text)


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, str | None]:
    """The keys and values of a .env file ({} when there is none): one reader for all.

    Quoting follows the shell and dotenv's own rules: ``${VAR}`` is expanded in unquoted and
    double-quoted values, never in single-quoted ones (a password may contain ``${``).
    """
    if not os.path.isfile(path):
        return {}
    import io

    from dotenv.parser import parse_stream
    from dotenv.variables import parse_variables

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise config_error(
            f"{os.fspath(path)} is not valid UTF-8 (byte {exc.start})",
            hint=f"re-encode {os.fspath(path)} as UTF-8",
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


_MARKERS = (".moviectl", ".env", "compose/docker-compose.yml")


def project_dir(start: str | None = None) -> str:
    """The directory moviectl works from, found upwards from ``start`` as git finds its
    repository: the nearest one holding ``.moviectl/``, ``.env`` or the compose file; the
    search stops at a ``.git`` directory and never takes ``/`` or ``/tmp``; else ``start``."""
    here = d = os.path.realpath(start or os.getcwd())
    while d not in ("/", "/tmp"):
        if any(os.path.exists(os.path.join(d, m)) for m in _MARKERS):
            return d
        if os.path.exists(os.path.join(d, ".git")):
            break
        d = os.path.dirname(d)
    return here


def raw_settings(env_file: str | os.PathLike[str] | None = None) -> dict[str, str | None]:
    """MOVIE_* values by setting name, as ``Settings`` reads them: the environment wins over
    the .env file (read by ``read_dotenv``); for the pydantic-free fast path."""
    path = env_file or os.path.join(project_dir(), ".env")
    # .env: keys compared upper-cased with MOVIE_ + the (ASCII) name, a key without a value
    # ignored (``_DotEnvSource``); U+212A, the Kelvin sign, is its own upper case
    dotenv = {k.upper(): v for k, v in read_dotenv(path).items() if v is not None}
    found: dict[str, str | None] = {
        k[len(ENV_PREFIX) :].lower(): v
        for k, v in dotenv.items()
        if k.startswith(ENV_PREFIX) and k.isascii()
    }
    # the environment: names compared lower-cased, as pydantic-settings does (U+017F, the
    # long s, upper-cases to S but is its own lower case: with it, a name is not read)
    prefix = ENV_PREFIX.lower()
    environ = {k.lower(): v for k, v in os.environ.items()}
    found.update({k[len(prefix) :]: v for k, v in environ.items() if k.startswith(prefix)})
    return found


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
