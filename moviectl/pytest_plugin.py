"""pytest plugin (entry point ``pytest11``): migrated movie databases for tests, two tiers.

Tier 1, a rolled-back transaction per test (about a millisecond):
- ``movie_connection``: a SQLAlchemy connection inside an outer transaction on one migrated
  database per worker; rolled back after the test.
- ``movie_session``: a session on it that may ``commit()`` (each commit is a savepoint,
  ``join_transaction_mode="create_savepoint"``) and sees its own writes; nothing survives.
Tier 2, a database of its own per test (for real commits, several connections, DDL):
- ``movie_db_url``: a fresh clone of the migrated template from a warm pool (made ahead
  and dropped behind by a background thread; scope: ``moviectl_db_scope``, default
  ``function``); ``movie_engine``: an engine on it.
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


@pytest.fixture(scope="session")
def moviectl_clone_pool(
    moviectl_settings: Settings, moviectl_admin_target: DbTarget, moviectl_template: str
) -> Iterator[Any]:
    """This worker's warm pool of clones (sized for the number of xdist workers)."""
    import os

    from moviectl.core.testdb_pool import ClonePool, prune_dead_pools

    prune_dead_pools(moviectl_settings, moviectl_admin_target)  # what killed runs left
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    pool = ClonePool(
        moviectl_settings, moviectl_admin_target, moviectl_template, size=max(2, 8 // workers)
    )
    pool.warm()
    yield pool
    pool.close()


@pytest.fixture(scope=_db_scope)
def movie_db_url(request: pytest.FixtureRequest, moviectl_clone_pool: Any) -> Iterator[str]:
    """Tier 2: a database of this test's own, migrated, dropped afterwards."""
    from moviectl.infra.conninfo import SecretUrl

    db = moviectl_clone_pool.take()
    node = request.node
    if isinstance(node, pytest.Item):
        node.stash[_DB_KEY] = db.name
    yield SecretUrl(db.full_url or "")  # its repr (pytest's failure report) hides the password
    failed = isinstance(node, pytest.Item) and node.stash.get(_FAILED_KEY, False)
    if failed and request.config.getoption("--moviectl-keep-failed"):
        return
    moviectl_clone_pool.give_back(db.name)


@pytest.fixture
def movie_engine(movie_db_url: str, moviectl_settings: Settings) -> Iterator[Engine]:
    """Tier 2: an engine (moviectl's factory) on the test's own database."""
    from moviectl.infra.engine import make_engine
    from moviectl.infra.settings import parse_db_url

    engine = make_engine(moviectl_settings, target=parse_db_url(movie_db_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def moviectl_shared_engine(moviectl_settings: Settings, moviectl_clone_pool: Any) -> Iterator[Any]:
    """Tier 1's database: one migrated clone per worker, for transactions rolled back."""
    from moviectl.infra.engine import make_engine
    from moviectl.infra.settings import parse_db_url

    db = moviectl_clone_pool.take()
    engine = make_engine(moviectl_settings, target=parse_db_url(db.full_url or ""))
    yield engine
    engine.dispose()
    moviectl_clone_pool.give_back(db.name)


@pytest.fixture
def movie_connection(moviectl_shared_engine: Any) -> Iterator[Any]:
    """Tier 1: a connection inside a transaction that is rolled back after the test."""
    connection = moviectl_shared_engine.connect()
    outer = connection.begin()
    try:
        yield connection
    finally:
        if outer.is_active:
            outer.rollback()
        connection.close()


@pytest.fixture
def movie_session(movie_connection: Any) -> Iterator[Session]:
    """Tier 1: a session whose commits are savepoints inside the test's transaction."""
    from sqlmodel import Session

    with Session(bind=movie_connection, join_transaction_mode="create_savepoint") as session:
        yield session
