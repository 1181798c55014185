"""What ``config show`` and ``doctor`` say about the settings: each one's shown value and
source, and the ``MOVIE_*`` keys no setting reads. The same reader as ``load_settings``
(``settings.read_raw``), so a value shown as from the environment is one it took."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moviectl.infra.conninfo import mask_locations
from moviectl.infra.envfile import read_dotenv
from moviectl.infra.project import project_root
from moviectl.infra.settings import (
    ENV_PREFIX,
    SETTING_FIELDS,
    Secret,
    Settings,
    key_of,
    mask_url,
    name_of,
    read_raw,
)


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: Any
    source: str  # "environment" | ".env" | "default"
    description: str
    secret: bool


def describe_settings(settings: Settings, env_file: str | Path | None = None) -> list[SettingRow]:
    """Every setting, its shown value (secrets masked) and where it came from: the same
    reader as ``load_settings``, so a value shown as from the environment is one it took."""
    path = Path(env_file) if env_file is not None else project_root() / ".env"
    raw = read_raw(path)
    rows = []
    for name, f in SETTING_FIELDS.items():
        value = getattr(settings, name)
        secret = f.metadata["kind"] == "secret"
        if isinstance(value, Secret):
            text = value.get_secret_value()
            shown: Any = mask_url(text) if name.endswith(("_url", "_url_test")) else "***"
        elif name == "backup_repo" and value:
            shown = mask_locations(value)  # a key typed into the URL by mistake
        elif isinstance(value, Path):
            shown = str(value)
        else:
            shown = value
        source = raw[name].source if name in raw else "default"
        rows.append(SettingRow(key_of(name), shown, source, f.metadata["help"], secret))
    return rows


def unknown_env_keys(env_file: str | Path | None = None) -> list[str]:
    """``MOVIE_*`` keys in the env file that no setting reads (typos)."""
    path = Path(env_file) if env_file is not None else project_root() / ".env"
    return sorted(
        k for k in read_dotenv(path) if k.upper().startswith(ENV_PREFIX) and name_of(k) is None
    )
