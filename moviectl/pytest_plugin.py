"""pytest plugin (entry point ``pytest11``): migrated movie databases for tests, two tiers.

Tier 1, a rolled-back transaction per test (a fraction of a millisecond):
- ``movie_connection``: a SQLAlchemy connection inside an outer transaction on one migrated
  database per worker (one connection held for the session); rolled back after the test.
  A test that commits that transaction itself fails at teardown (its rows would leak).
- ``movie_session``: a session on it that may ``commit()`` (each commit is a savepoint,
  ``join_transaction_mode="create_savepoint"``) and sees its own writes; nothing survives.
Tier 2, a database of its own per test (for real commits, several connections, DDL):
- ``movie_db_url``: a fresh clone of the migrated template from a warm pool (made ahead
  and dropped behind by a background thread; scope: ``moviectl_db_scope``, default
  ``function``); ``movie_engine``: an engine on it. The pool starts with the session's
  first test when any collected test needs a database, and makes as many clones ahead
  as the collected tests will take (per xdist worker), never more than it keeps ready.
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


_TIER1 = frozenset({"movie_connection", "movie_session"})
_TIER2 = frozenset({"movie_db_url", "movie_engine"})
_DEMAND_KEY = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)  # after -k/-m deselected what will not run
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Count the clones this run will take, so the pool makes that many ahead, no more."""
    tier2 = [it for it in items if _TIER2 & set(getattr(it, "fixturenames", ()))]
    scope = _db_scope("movie_db_url", config)
    takes = len(tier2) if scope == "function" else len({it.path for it in tier2})
    takes = min(takes, 1) if scope == "session" else takes
    takes += any(_TIER1 & set(getattr(it, "fixturenames", ())) for it in items)
    config.stash[_DEMAND_KEY] = takes


def _workers(config: pytest.Config) -> int:
    """How many xdist workers share the run (1 without xdist)."""
    workerinput = getattr(config, "workerinput", None)  # set in xdist workers only
    return max(1, int(workerinput.get("workercount", 1))) if workerinput else 1


@pytest.fixture(scope="session", autouse=True)
def _moviectl_pool_early(request: pytest.FixtureRequest) -> None:
    """Start the pool with the session's first test when the run has database tests, so
    clones are made while the tests before the first database test run."""
    if request.config.stash.get(_DEMAND_KEY, 0) <= 0:
        return
    try:
        request.getfixturevalue("moviectl_clone_pool")
    except (Exception, pytest.skip.Exception, pytest.fail.Exception):
        return  # the test that asks for a database reports it, not this one


@pytest.fixture(scope="session")
def moviectl_clone_pool(
    request: pytest.FixtureRequest,
    moviectl_settings: Settings,
    moviectl_admin_target: DbTarget,
    moviectl_template: str,
) -> Iterator[Any]:
    """This worker's warm pool of clones, sized for what this worker's tests will take."""
    from moviectl.core.testdb_pool import ClonePool, prune_dead_pools

    prune_dead_pools(moviectl_settings, moviectl_admin_target)  # what killed runs left
    demand = request.config.stash.get(_DEMAND_KEY, None)
    workers = _workers(request.config)
    pool = ClonePool(
        moviectl_settings,
        moviectl_admin_target,
        moviectl_template,
        size=max(4, 32 // workers),
        # a worker's share is a guess under xdist: a little slack, then clones on demand
        expected=None if demand is None else -(-demand // workers) + (2 if workers > 1 else 0),
    )
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


class SharedDatabase:
    """Tier 1's database: one migrated clone per worker, and one connection on it, held
    for the session (a test costs a BEGIN and a ROLLBACK, no checkout, no ping).

    A test that commits the outer transaction itself (``connection.commit()``) leaves rows
    behind: that test fails at teardown and the next test gets a fresh clone.
    """

    def __init__(self, pool: Any, settings: Settings) -> None:
        self.pool, self.settings = pool, settings
        self.db: Any = None
        self.engine: Any = None
        self.conn: Any = None
        self.committed = False

    def connection(self) -> Any:
        if self.engine is None:
            from moviectl.infra.engine import make_engine
            from moviectl.infra.settings import parse_db_url

            self.db = self.pool.take(until_full=False)  # one clone: no wait for the rest
            self.engine = make_engine(self.settings, target=parse_db_url(self.db.full_url or ""))
        if self.conn is None or self.conn.closed or self.conn.invalidated:
            from sqlalchemy import event

            self.conn = self.engine.connect()
            event.listen(self.conn, "commit", self._on_commit)
        return self.conn

    def _on_commit(self, conn: Any) -> None:
        self.committed = True

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.engine is not None:
            self.engine.dispose()
            self.pool.give_back(self.db.name)
        self.db = self.engine = self.conn = None
        self.committed = False


@pytest.fixture(scope="session")
def moviectl_shared_db(moviectl_settings: Settings, moviectl_clone_pool: Any) -> Iterator[Any]:
    """Tier 1's database (``SharedDatabase``): one migrated clone per worker."""
    shared = SharedDatabase(moviectl_clone_pool, moviectl_settings)
    yield shared
    shared.close()


@pytest.fixture
def movie_connection(moviectl_shared_db: SharedDatabase) -> Iterator[Any]:
    """Tier 1: a connection inside a transaction that is rolled back after the test."""
    connection = moviectl_shared_db.connection()
    connection.begin()
    try:
        yield connection
    finally:
        if connection.in_transaction():  # ours, or one the test began after a rollback
            connection.rollback()
        if moviectl_shared_db.committed:
            moviectl_shared_db.close()  # its rows stay there: the next test gets a new clone
            pytest.fail(
                "the test committed tier 1's outer transaction (rows would leak into the next "
                "tests); use movie_session (its commits are savepoints) or tier 2 (movie_db_url)",
                pytrace=False,
            )


@pytest.fixture
def movie_session(movie_connection: Any) -> Iterator[Session]:
    """Tier 1: a session whose commits are savepoints inside the test's transaction."""
    from sqlmodel import Session

    with Session(bind=movie_connection, join_transaction_mode="create_savepoint") as session:
        yield session
