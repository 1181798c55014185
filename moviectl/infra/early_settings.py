"""The few settings a backup needs before pg_dump starts, read without pydantic, and always
confirmed by ``load_settings()`` while pg_dump runs.

A scripted ``moviectl backup`` pays ~75 ms to import pydantic and pydantic-settings before
it can start pg_dump. ``read_early`` reads what the backup needs up to that point (the app
database, ``MOVIE_CONNECT_TIMEOUT``, ``MOVIE_BACKUP_DIR``, ``MOVIE_PG_BIN_DIR``,
``MOVIE_DB_BACKEND``) with the stdlib reader and the rules ``Settings`` itself uses
(``libpq_syntax``: ``raw_settings``, ``resolve_fields``, ``connect_timeout_of``), and
declines (None: load the settings first) whenever a value is not one it reads exactly as
pydantic does. ``EarlySettings.settle()`` then loads every setting through pydantic and
compares: a rejected setting raises its ``ConfigError`` (the caller kills pg_dump and
removes its temp file, as on any failure); a value read differently raises
``SettingsMoved`` with the validated settings, and the backup starts over on them.

What may happen before ``settle()`` (the backup's invariant): a login and an exported
snapshot on the app database, the backup's own temp file in an output directory that
already exists, and pg_dump writing into it. Nothing is created, cleaned or dropped.
"""

from __future__ import annotations

from moviectl.infra.conninfo import (
    DbTarget,
    connect_timeout_of,
    in_project,
    project_root,
    raw_settings,
    resolve_target,
)
from moviectl.infra.errors import MoviectlError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from moviectl.infra.settings import Settings

BACKENDS = ("auto", "embedded", "docker", "external")
BACKUP_DIR = "backups"  # Settings.backup_dir's default (a test holds them equal)


class SettingsMoved(Exception):
    """The validated settings differ from the early read: start over on ``settings``."""

    def __init__(self, settings: Settings, names: list[str]) -> None:
        super().__init__(f"settings read differently: {', '.join(names)}")
        self.settings = settings


class EarlySettings:
    """What a backup reads before ``settle()``, with ``Settings``' names and meaning."""

    def __init__(
        self,
        app: DbTarget,
        connect_timeout: int,
        backup_dir: Path,
        pg_bin_dir: Path | None,
        db_backend: str,
    ) -> None:
        self.app = app
        self.connect_timeout = connect_timeout
        self.backup_dir = backup_dir
        self.pg_bin_dir = pg_bin_dir
        self.db_backend = db_backend
        self._outcome: Settings | Exception | None = None

    def target(self, database: str | None = None) -> DbTarget:
        """``Settings.target``: the app database, or another on the same server."""
        return self.app.with_database(database) if database else self.app

    @property
    def settled(self) -> bool:
        """Whether ``settle()`` has run (whatever it answered)."""
        return self._outcome is not None

    def settle(self) -> Settings:
        """Every setting, validated by ``load_settings()``; ``SettingsMoved`` when one this
        object holds was read differently (a ``ConfigError`` when one is rejected). Loaded
        once: a second call answers (or raises) as the first did."""
        if self._outcome is None:
            try:
                self._outcome = self._load()
            except Exception as exc:
                self._outcome = exc
        if isinstance(self._outcome, Exception):
            raise self._outcome
        return self._outcome

    def _load(self) -> Settings:
        from moviectl.infra.held_signals import held

        with held():  # Ctrl-C inside pydantic's import would exit -2, not 130 (held_signals)
            from moviectl.infra.settings import load_settings
        settings = load_settings()  # not held: it may block (a .env that is a FIFO)
        moved = [
            name
            for name, mine, theirs in (
                ("target", self.app, settings.target()),
                ("connect_timeout", self.connect_timeout, settings.connect_timeout),
                ("backup_dir", self.backup_dir, settings.backup_dir),
                ("pg_bin_dir", self.pg_bin_dir, settings.pg_bin_dir),
                ("db_backend", self.db_backend, settings.db_backend),
            )
            if mine != theirs
        ]
        if moved:
            raise SettingsMoved(settings, moved)
        return settings


def read_early() -> EarlySettings | None:
    """The early settings, or None where only pydantic can say (a value the stdlib reader
    rejects, or reads in a way that might not be pydantic's): load the settings first."""
    from pathlib import Path

    try:
        values = raw_settings()
        app = resolve_target(values)
        timeout = connect_timeout_of(values.get("connect_timeout"))
    except (MoviectlError, OSError, ValueError):  # an unreadable .env, too
        return None  # load_settings() explains it, as the full CLI does
    backend = values.get("db_backend")
    backup_dir, bin_dir = values.get("backup_dir"), values.get("pg_bin_dir")
    if backend is not None and backend not in BACKENDS:
        return None
    if "" in (backup_dir, bin_dir) or "\0" in (backup_dir or "") + (bin_dir or ""):
        return None
    backups = in_project(Path(BACKUP_DIR if backup_dir is None else backup_dir), project_root())
    return EarlySettings(
        app,
        timeout,
        backups,
        None if bin_dir is None else Path(bin_dir),
        backend or "auto",
    )
