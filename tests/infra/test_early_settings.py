"""infra/early_settings.py: what a backup reads before pydantic is what pydantic reads, or
nothing (None: load the settings first); ``settle()`` holds it to ``load_settings()``."""

from __future__ import annotations

from pathlib import Path

import pytest

from moviectl.infra.early_settings import BACKUP_DIR, EarlySettings, SettingsMoved, read_early
from moviectl.infra.errors import ConfigError
from moviectl.infra.settings import Settings, load_settings

URL = "postgresql://u%40x:p%2Fw@db.example:6543/films?sslmode=require&application_name=a"

AGREE = [
    {},
    {"MOVIE_DATABASE_URL": URL},
    {"MOVIE_DATABASE_URL": "host=/run/pg port=5 dbname='a b' user=me password='x y'"},
    {"MOVIE_DB_HOST": "a,b", "MOVIE_DB_PORT": "05432", "MOVIE_DB_PASSWORD": ""},
    {"MOVIE_DB_PORT": " 5433 ", "MOVIE_DB_NAME": " spaced "},
    {"MOVIE_CONNECT_TIMEOUT": "007"},
    {"MOVIE_CONNECT_TIMEOUT": "3600"},
    {"MOVIE_BACKUP_DIR": "bk/sub"},
    {"MOVIE_BACKUP_DIR": "/abs/olute"},
    {"MOVIE_BACKUP_DIR": "~/x"},
    {"MOVIE_BACKUP_DIR": "a/../b/"},
    {"MOVIE_PG_BIN_DIR": "/usr/lib/postgresql/15/bin"},
    {"MOVIE_PG_BIN_DIR": "rel/bin"},
    {"MOVIE_DB_BACKEND": "embedded"},
    {"MOVIE_DB_BACKEND": "docker"},
    {"MOVIE_DB_BACKEND": "external"},
    {"movie_db_backend": "external", "movie_backup_dir": "lower"},
    {"MOVIE_UNKNOWN": "ignored", "MOVIE_DB_IMAGE": "x:y"},
    # pydantic-settings compares environment names lower-cased: U+017F (long s) upper-cases
    # to S, so an upper-casing reader would take this for MOVIE_DATABASE_URL
    {"MOVIE_DATABA\u017fE_URL": "postgresql://x@h:1/d", "MOVIE_DB_\u0131MAGE": "y"},
]


def _env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize("env", AGREE)
def test_the_early_read_is_what_load_settings_reads(monkeypatch, env):
    _env(monkeypatch, env)
    early = read_early()
    assert early is not None
    settings = early.settle()  # SettingsMoved if any field were read differently
    assert early.target() == settings.target() and early.target("x") == settings.target("x")


def test_a_dotenv_name_is_read_only_as_pydantic_settings_reads_it():
    """U+212A (Kelvin sign) is its own upper case, and lower-cases to k: the .env reader
    compares upper-cased names, so MOVIE_BAC<U+212A>UP_DIR is no setting (found by the
    attack pass: the fast path used it, then started over)."""
    Path(".env").write_text("MOVIE_BAC\u212aUP_DIR=kelvin\nMOVIE_DB_BAC\u212aEND=external\n")
    early = read_early()
    assert early is not None
    assert early.settle().backup_dir == early.backup_dir
    assert early.backup_dir.name == "backups" and early.db_backend == "auto"


def test_a_dotenv_key_without_a_value_hides_nothing(monkeypatch):
    """``KEY`` alone on a line is no value: it does not hide ``KEY=value`` in another case."""
    Path(".env").write_text(
        "MOVIE_DATABASE_URL=postgresql://a@b:6/c\nmovie_database_url\nMOVIE_DB_BACKEND\n"
    )
    early = read_early()
    assert early is not None and early.app.port == 6
    assert early.settle().target().port == 6


@pytest.mark.parametrize("where", ["root", "subdirectory"])
def test_the_dotenv_and_the_project_root_are_read_as_load_settings_reads_them(
    monkeypatch, tmp_path, where
):
    (tmp_path / ".env").write_text(
        "MOVIE_BACKUP_DIR=from_dotenv\nexport MOVIE_DB_BACKEND='external'\n"
        'MOVIE_DB_PASSWORD="a b${HOME}"\nMOVIE_PG_BIN_DIR\n'
    )
    if where == "subdirectory":
        (tmp_path / "sub" / "deeper").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / "sub" / "deeper")
    early = read_early()
    assert early is not None
    settings = early.settle()
    assert early.backup_dir == settings.backup_dir
    assert settings.backup_dir.resolve() == (tmp_path / "from_dotenv").resolve()
    assert (early.db_backend, early.pg_bin_dir) == ("external", None)


@pytest.mark.parametrize(
    "env",
    [
        {"MOVIE_DB_BACKEND": "Docker"},  # pydantic's Literal is case-sensitive: its word
        {"MOVIE_DB_BACKEND": ""},
        {"MOVIE_BACKUP_DIR": ""},
        {"MOVIE_PG_BIN_DIR": ""},
        {"MOVIE_DB_PORT": "x"},
        {"MOVIE_DB_NAME": " "},
        {"MOVIE_CONNECT_TIMEOUT": "5.0"},
        {"MOVIE_DATABASE_URL": "postgresql://u@h:notaport/db"},
    ],
)
def test_where_only_pydantic_can_say_there_is_no_early_read(monkeypatch, env):
    _env(monkeypatch, env)
    assert read_early() is None


@pytest.mark.parametrize(
    ("env", "dotenv"),
    [
        ({"MOVIE_POOL_SIZE": "x"}, ""),
        ({"MOVIE_STALL_TIMEOUT": "-1"}, ""),
        ({}, "MOVIE_POOL_SIZE=0"),
    ],
)
def test_a_setting_only_pydantic_rejects_fails_settle_as_load_settings_fails(
    monkeypatch, env, dotenv
):
    _env(monkeypatch, env)
    Path(".env").write_text(dotenv)
    early = read_early()
    assert early is not None
    with pytest.raises(ConfigError) as settle_error:
        early.settle()
    with pytest.raises(ConfigError) as load_error:
        load_settings()
    assert settle_error.value.message == load_error.value.message
    assert settle_error.value.hint == load_error.value.hint


def test_a_value_read_differently_hands_over_the_validated_settings(monkeypatch):
    early = read_early()
    assert early is not None
    moved = EarlySettings(early.app, 99, Path("elsewhere"), None, "auto")
    with pytest.raises(SettingsMoved) as exc:
        moved.settle()
    assert exc.value.settings.connect_timeout == 5
    assert str(exc.value) == "settings read differently: connect_timeout, backup_dir"


def test_the_early_default_is_the_settings_default():
    assert Path(BACKUP_DIR) == Settings.model_fields["backup_dir"].default
