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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from moviectl.infra.errors import ConfigError
from moviectl.infra.libpq_syntax import SECRET_KEYS, TLS_MODES, parse_conninfo, port_number

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


MAX_CONNECT_TIMEOUT = 3600


def resolve_target(values: Mapping[str, str | None]) -> DbTarget:
    """The app database from raw setting values (keys: database_url, db_host, db_port,
    db_name, db_user, db_password; None = unset). The one set of rules for the full CLI
    (``Settings.target``) and the ``health --live`` fast path."""
    url = values.get("database_url")
    if url is not None:
        return parse_db_url(url, "MOVIE_DATABASE_URL")

    def get(key: str) -> str:
        value = values.get(key)
        return str(DEFAULTS[key] if value is None else value)

    for key in ("db_host", "db_name", "db_user"):
        if not get(key).strip():
            raise ConfigError(f"bad value for {ENV_PREFIX}{key.upper()}: it is empty")
    port = get("db_port").strip()
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad value for {ENV_PREFIX}DB_PORT: a number from 1 to 65535")
    return DbTarget(
        host=get("db_host"),
        port=int(port),
        user=get("db_user"),
        password=get("db_password") or None,
        database=get("db_name"),
    )


def connect_timeout_of(value: str | None) -> int:
    """MOVIE_CONNECT_TIMEOUT's rule: whole seconds from 1 to an hour."""
    text = str(DEFAULTS["connect_timeout"] if value is None else value).strip()
    if not text.isdigit() or not 0 < int(text) <= MAX_CONNECT_TIMEOUT:
        limit = MAX_CONNECT_TIMEOUT
        raise ConfigError(f"bad value for {ENV_PREFIX}CONNECT_TIMEOUT: 1 to {limit} seconds")
    return int(text)


_MARKERS = (".moviectl", ".env", "compose/docker-compose.yml")


def project_root(start: Path | None = None) -> Path:
    """The directory moviectl works from, found upwards from ``start`` as git finds its
    repository: the nearest one holding ``.moviectl/``, ``.env`` or the compose file; the
    search stops at a ``.git`` directory and never takes ``/`` or ``/tmp``; else ``start``."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if d in (Path("/"), Path("/tmp")):
            break
        if any((d / m).exists() for m in _MARKERS):
            return d
        if (d / ".git").exists():
            break
    return here


def raw_settings(env_file: Path | None = None) -> dict[str, str | None]:
    """MOVIE_* values by setting name, as ``Settings`` reads them: the environment wins over
    the .env file (read by ``read_dotenv``); for the pydantic-free fast path."""
    values = {k.upper(): v for k, v in read_dotenv(env_file or project_root() / ".env").items()}
    values.update({k.upper(): v for k, v in os.environ.items() if k.upper().startswith(ENV_PREFIX)})
    return {k[len(ENV_PREFIX) :].lower(): v for k, v in values.items() if k.startswith(ENV_PREFIX)}


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
    port = port_number(ports[0], name) if ports and ports[0] else 5432
    for extra in ports[1:]:
        if extra:
            port_number(extra, name)
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


class SecretUrl(str):
    """A connection URL that holds its password but never shows it: its ``repr`` (what
    pytest prints for a failing test's fixtures, what debuggers and logs show) is masked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_url(str(self)))
