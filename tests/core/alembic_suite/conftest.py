"""pytest-alembic's fixtures, pointed at moviectl's migration scripts and an empty
throwaway database on the test server (never the app database): the README's
"Using moviectl's migrations from your own code", as a service's tests would write it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def alembic_config() -> Any:
    from alembic.config import Config

    from moviectl.core.migrations.scripts import script_location

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    return cfg


@pytest.fixture
def alembic_engine(moviectl_settings: Any, moviectl_admin_target: Any) -> Iterator[Any]:
    from moviectl.core import testdb
    from moviectl.infra.engine import make_engine
    from moviectl.infra.settings import parse_db_url

    s, admin = moviectl_settings, moviectl_admin_target
    db = testdb.create(s, target=admin, template="template0")  # empty, dropped after
    engine = make_engine(s, target=parse_db_url(db.full_url or ""), pooled=False)
    yield engine
    engine.dispose()
    testdb.drop(s, [db.name], target=admin)


@pytest.fixture(autouse=True)
def _app_database_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app database's URL points nowhere: a migration that read the settings instead of
    using the handed-in engine would fail, so these tests prove it is never touched."""
    monkeypatch.setenv("MOVIE_DATABASE_URL", "postgresql://app@127.0.0.1:1/the_app_database")
