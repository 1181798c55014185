"""Settings: one config for every command, read from ``MOVIE_*`` variables and ``.env``.

``load_settings()`` is the only way in; nothing here runs at import time. The
password is a ``SecretStr`` and every URL this module shows is masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from moviectl.infra.conninfo import (
    APP_NAME,
    DEFAULTS,
    ENV_PREFIX,
    MAX_CONNECT_TIMEOUT,
    DbTarget,
    in_project,
    mask_url,
    parse_db_url,
    project_root,
    read_dotenv,
    resolve_target,
)
from moviectl.infra.errors import ConfigError

__all__ = ["APP_NAME", "DbTarget", "Settings", "load_settings", "mask_url", "parse_db_url"]
Backend = Literal["auto", "embedded", "docker", "external"]


class _DotEnvSource(PydanticBaseSettingsSource):
    """The ``.env`` file through moviectl's one reader (``read_dotenv``: shell quoting rules)."""

    def __init__(self, settings_cls: type[BaseSettings], env_file: Any) -> None:
        super().__init__(settings_cls)
        self.env_file = env_file

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        files = self.env_file if isinstance(self.env_file, list | tuple) else [self.env_file]
        found: dict[str, Any] = {}
        for f in files:
            if f is None:
                continue
            values = {k.upper(): v for k, v in read_dotenv(Path(f)).items() if v is not None}
            for name in self.settings_cls.model_fields:
                key = ENV_PREFIX + name.upper()
                if key in values:
                    found[name] = values[key]
        return found


class Settings(BaseSettings):
    """Every setting moviectl reads. Environment variables win over ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: SecretStr | None = Field(
        None, description="Full URL of the app database; overrides the MOVIE_DB_* parts"
    )
    db_host: str = Field(DEFAULTS["db_host"], description="Server host name or address")
    db_port: int = Field(DEFAULTS["db_port"], ge=1, le=65535, description="Server TCP port")
    db_name: str = Field(DEFAULTS["db_name"], min_length=1, description="App database name")
    db_user: str = Field(DEFAULTS["db_user"], min_length=1, description="App database user")
    db_password: SecretStr = Field(
        SecretStr(DEFAULTS["db_password"]), description="App database password"
    )
    database_url_test: SecretStr | None = Field(
        None, description="Server the tests and test databases use (instead of an embedded one)"
    )
    database_echo: bool = Field(False, description="Log every SQL statement")
    pool_size: int = Field(5, ge=1, description="Connections kept in the engine's pool")
    max_overflow: int = Field(10, ge=0, description="Extra connections beyond pool_size")
    pool_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a pooled connection")
    connect_timeout: int = Field(
        DEFAULTS["connect_timeout"],
        ge=1,
        le=MAX_CONNECT_TIMEOUT,
        description="Seconds to wait for the server to answer",
    )
    stall_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a backup, restore or seed may make no progress before moviectl "
        "probes the server; if it does not answer, the command fails (exit 3)",
    )
    db_backend: Backend = Field("auto", description="Server backend: auto|embedded|docker|external")
    db_image: str = Field("postgres:16", description="Docker image of the db service")
    compose_file: Path = Field(
        Path("compose/docker-compose.yml"), description="Compose file with the db service"
    )
    compose_project: str | None = Field(
        None, description="Compose project name (default: COMPOSE_PROJECT_NAME, else moviectl)"
    )
    pg_bin_dir: Path | None = Field(
        None, description="Directory of PostgreSQL binaries (default: the embedded wheel's)"
    )
    data_dir: Path = Field(Path(".moviectl"), description="Embedded server data and logs")
    backup_dir: Path = Field(Path("backups"), description="Where backups are written")
    migrate_lock_timeout: float = Field(
        10.0, ge=0, description="Seconds a migration waits for another one to finish"
    )
    migrate_statement_lock_timeout: float = Field(
        5.0,
        ge=0,
        description="Seconds a migration statement waits for a table lock (0: no limit)",
    )
    migrate_statement_timeout: float = Field(
        3600.0, ge=0, description="Seconds one migration statement may run (0: no limit)"
    )
    migrate_lock_retries: int = Field(
        3, ge=0, le=20, description="Retries, with backoff, after a lock timeout"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then ``.env`` (read by ``read_dotenv``)."""
        env_file = getattr(dotenv_settings, "env_file", None)
        return (init_settings, env_settings, _DotEnvSource(settings_cls, env_file))

    # ---- derived -------------------------------------------------------------------
    def target(self, database: str | None = None) -> DbTarget:
        """Where the app database lives (optionally another database on the same server)."""
        t = resolve_target(
            {
                "database_url": self.database_url.get_secret_value()
                if self.database_url is not None
                else None,
                "db_host": self.db_host,
                "db_port": str(self.db_port),
                "db_name": self.db_name,
                "db_user": self.db_user,
                "db_password": self.db_password.get_secret_value(),
            }
        )
        return t.with_database(database) if database else t

    def test_target(self) -> DbTarget | None:
        """The server named by MOVIE_DATABASE_URL_TEST, if any."""
        if self.database_url_test is None:
            return None
        return parse_db_url(self.database_url_test.get_secret_value(), "MOVIE_DATABASE_URL_TEST")

    def for_target(self, target: DbTarget) -> Settings:
        """These settings, pointed at ``target`` (another database, or another user)."""
        return self.model_copy(update={"database_url": SecretStr(target.url(masked=False))})

    @property
    def masked_url(self) -> str:
        return self.target().url(masked=True)


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the settings from the environment and ``env_file`` (default: the project root's
    ``.env``). Relative paths (data, backups, compose file) are the project root's, so a
    command run from a subdirectory finds the same server (``conninfo.project_root``)."""
    path = Path(env_file) if env_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"env file not found: {path}", hint="check the --env-file path")
    root = project_root()
    try:
        settings = Settings(_env_file=path if path is not None else root / ".env", **overrides)  # type: ignore[call-arg]
        return settings.model_copy(
            update={
                k: in_project(getattr(settings, k), root)
                for k in ("data_dir", "backup_dir", "compose_file")
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ENV_PREFIX + str(err["loc"][0]).upper() if err["loc"] else "settings"
        where = _source_of(key, path if path is not None else root / ".env")
        raise ConfigError(
            f"bad value for {key}{where}: {err['msg']}",
            hint=f"fix {key}{where}; `moviectl config show` works again once it is valid",
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read settings: {exc}") from None


def _source_of(key: str, env_file: Path) -> str:
    """`` (environment)`` or `` (.env line N)``: where a setting's value came from."""
    if any(k.upper() == key for k in os.environ):
        return " (in the environment)"
    try:
        for no, line in enumerate(env_file.read_text(encoding="utf-8").splitlines(), 1):
            name = line.strip().removeprefix("export ").split("=", 1)[0].strip()
            if name.upper() == key:
                return f" ({env_file.name} line {no})"
    except (OSError, UnicodeDecodeError):
        pass
    return ""


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: Any
    source: str  # "environment" | ".env" | "default"
    description: str
    secret: bool


def describe_settings(settings: Settings, env_file: str | Path | None = None) -> list[SettingRow]:
    """Every setting, its shown value (secrets masked) and where it came from."""
    path = Path(env_file) if env_file is not None else project_root() / ".env"
    dotenv = {k.upper() for k in read_dotenv(path)}
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
    path = Path(env_file) if env_file is not None else project_root() / ".env"
    known = {ENV_PREFIX + n.upper() for n in Settings.model_fields}
    return sorted(
        k for k in read_dotenv(path) if k.upper().startswith(ENV_PREFIX) and k.upper() not in known
    )
