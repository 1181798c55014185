"""pytest-alembic's fixtures, pointed at moviectl's migration scripts and a throwaway
database (never the app database): the way a service's own tests would set it up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from moviectl.infra.settings import Settings, parse_db_url


@pytest.fixture
def alembic_config() -> Any:
    from alembic.config import Config

    from moviectl.core.migrations.scripts import script_location

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


@pytest.fixture
def alembic_engine(empty_db_url: str, moviectl_settings: Settings) -> Iterator[Any]:
    from moviectl.infra.engine import make_engine

    engine = make_engine(moviectl_settings, target=parse_db_url(empty_db_url), pooled=False)
    yield engine
    engine.dispose()
