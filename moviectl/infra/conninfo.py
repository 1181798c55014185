"""Database URLs and connection targets, standard library only (the hot path uses it).

``DEFAULTS`` holds the connection settings' defaults: ``Settings`` and the
``health --live`` fast path both read them from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

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

    text = path.read_text(encoding="utf-8")
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


@dataclass(frozen=True)
class DbTarget:
    """Connection parameters of one database. ``password`` never shows in repr or URLs."""

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    database: str = "postgres"
    params: tuple[tuple[str, str], ...] = ()

    def with_database(self, database: str) -> DbTarget:
        return replace(self, database=database)

    @property
    def where(self) -> str:
        """``host:port/database``, for error messages."""
        return f"{self.host}:{self.port}/{self.database}"

    def url(self, *, masked: bool = True, scheme: str = "postgresql") -> str:
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + ("***" if masked else quote(self.password, safe=""))
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"?{urlencode(self.params)}" if self.params else ""
        return f"{scheme}://{auth}@{host}:{self.port}/{quote(self.database, safe='')}{query}"

    def libpq_params(self, connect_timeout: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (password included: never print this)."""
        kw: dict[str, Any] = dict(self.params)
        kw.update(host=self.host, port=self.port, user=self.user, dbname=self.database)
        if self.password:
            kw["password"] = self.password
        kw.setdefault("application_name", APP_NAME)
        kw.setdefault("client_encoding", "UTF8")
        for key, value in TCP_LIVENESS.items():
            kw.setdefault(key, value)
        if connect_timeout is not None:
            kw["connect_timeout"] = connect_timeout
        return kw

    def child_conninfo(self) -> str:
        """The ``-d`` argument for pg_dump/pg_restore/psql: database and TCP liveness
        settings (host, port and user travel in ``child_env``; the password never here)."""
        parts = {"dbname": self.database, **TCP_LIVENESS}
        return " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in parts.items())

    def child_env(self) -> dict[str, str]:
        """Environment for pg_dump/psql/pgcli: the password goes here, never on argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGUSER": self.user,
            "PGDATABASE": self.database,
            "PGAPPNAME": APP_NAME,
        }
        if self.password:
            env["PGPASSWORD"] = self.password
        return env


def _conninfo_quote(value: str) -> str:
    """A libpq key=value value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_db_url(url: str, name: str = "URL") -> DbTarget:
    """Parse a PostgreSQL URL into a ``DbTarget``; a malformed one is a ``ConfigError``."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"malformed {name}: {_mask_raw(url)} ({exc})",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        ) from None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(
            f"bad port {port} in {name} (1-65535)",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    if parts.scheme not in _SCHEMES or not parts.hostname:
        raise ConfigError(
            f"malformed {name}: {_mask_raw(url)}",
            hint="expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
        )
    user = unquote(parts.username or "postgres")
    database = unquote(parts.path.lstrip("/")) or user
    return DbTarget(
        host=parts.hostname,
        port=port or 5432,
        user=user,
        password=unquote(parts.password) if parts.password else None,
        database=database,
        params=tuple(parse_qsl(parts.query)),
    )


def mask_url(url: str) -> str:
    """Mask the password of any URL-ish string (best effort, never raises)."""
    return _mask_raw(url)


def _mask_raw(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    auth, _, host = rest.rpartition("@")
    if ":" in auth:
        auth = auth.split(":", 1)[0] + ":***"
    return f"{scheme}://{auth}@{host}"
