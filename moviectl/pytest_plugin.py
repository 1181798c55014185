"""pytest plugin (entry point ``pytest11``): fresh, migrated movie databases per test.

Fixtures:
- ``movie_db_url``: URL of a database cloned from the migrated template, dropped after
  the test (scope: ``moviectl_db_scope`` ini option, default ``function``).
- ``movie_engine`` / ``movie_session``: built by moviectl's engine factory.
- ``moviectl_admin_target``: the server to create databases on (session scope;
  default: MOVIE_DATABASE_URL_TEST, else the app's server). Override it in a
  conftest to point at a server your suite starts itself.

``--moviectl-keep-failed`` keeps a failed test's database for inspection; its name
is printed in the failure report either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from moviectl.infra.settings import DbTarget, Settings

_DB_KEY = pytest.StashKey[str]()
_FAILED_KEY = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("moviectl")
    group.addoption(
        "--moviectl-keep-failed",
        action="store_true",
        default=False,
        help="keep the test database of a failed test (drop it with `moviectl testdb drop`)",
    )
    parser.addini(
        "moviectl_db_scope",
        "scope of movie_db_url: function (default), module or session",
        default="function",
    )


def _db_scope(fixture_name: str, config: pytest.Config) -> Any:
    scope = str(config.getini("moviectl_db_scope") or "function")
    if scope not in ("function", "module", "session"):
        raise pytest.UsageError(f"moviectl_db_scope must be function, module or session: {scope}")
    return scope


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed:
        item.stash[_FAILED_KEY] = True
        name = item.stash.get(_DB_KEY, None)
        if name:
            kept = item.config.getoption("--moviectl-keep-failed")
            note = "kept for inspection" if kept else "dropped (keep it: --moviectl-keep-failed)"
            report.sections.append(("moviectl", f"test database: {name} ({note})"))
    return report


@pytest.fixture(scope="session")
def moviectl_settings() -> Settings:
    from moviectl.infra.settings import load_settings

    return load_settings()


@pytest.fixture(scope="session")
def moviectl_admin_target(moviectl_settings: Settings) -> DbTarget:
    from moviectl.infra.admin import admin_target

    return admin_target(moviectl_settings)


@pytest.fixture(scope="session")
def moviectl_template(moviectl_settings: Settings, moviectl_admin_target: DbTarget) -> str:
    from moviectl.core.testdb import ensure_template

    return ensure_template(moviectl_settings, moviectl_admin_target)


@pytest.fixture(scope="session")
def moviectl_admin_conn(moviectl_settings: Settings, moviectl_admin_target: DbTarget) -> Any:
    """One admin connection per worker: cloning then costs no login each time."""
    from moviectl.infra.engine import connect

    conn = connect(moviectl_admin_target, connect_timeout=moviectl_settings.connect_timeout)
    yield conn
    conn.close()


@pytest.fixture(scope=_db_scope)
def movie_db_url(
    request: pytest.FixtureRequest,
    moviectl_settings: Settings,
    moviectl_admin_target: DbTarget,
    moviectl_template: str,
    moviectl_admin_conn: Any,
) -> Iterator[str]:
    from moviectl.core import testdb

    db = testdb.create(
        moviectl_settings,
        target=moviectl_admin_target,
        template=moviectl_template,
        owner=f"pytest {request.node.nodeid}",
        conn=moviectl_admin_conn,
    )
    node = request.node
    if isinstance(node, pytest.Item):
        node.stash[_DB_KEY] = db.name
    from moviectl.infra.conninfo import SecretUrl

    yield SecretUrl(db.full_url or "")  # its repr (pytest's failure report) hides the password
    failed = isinstance(node, pytest.Item) and node.stash.get(_FAILED_KEY, False)
    if failed and request.config.getoption("--moviectl-keep-failed"):
        return
    testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)


@pytest.fixture
def movie_engine(movie_db_url: str, moviectl_settings: Settings) -> Iterator[Engine]:
    from moviectl.infra.engine import make_engine
    from moviectl.infra.settings import parse_db_url

    engine = make_engine(moviectl_settings, target=parse_db_url(movie_db_url))
    yield engine
    engine.dispose()


@pytest.fixture
def movie_session(movie_engine: Engine) -> Iterator[Session]:
    from sqlmodel import Session

    with Session(movie_engine) as session:
        yield session
        session.rollback()
