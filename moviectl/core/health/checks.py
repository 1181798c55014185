"""`moviectl health`: can the app work against this database right now?

Six checks, each with a status, a latency and a detail line; later checks are
skipped when an earlier one they depend on failed. Every query runs in a transaction with
``statement_timeout`` and ``lock_timeout`` set (``SET LOCAL``: nothing outlives it, behind a
pooler too). The core returns a ``HealthReport``; it never prints.

A database *ahead* of the code (its revision unknown to this code's scripts: a newer release
migrated it, as in a rolling deploy) is a warning, "degraded", never a failure: the old
code keeps serving while the new one rolls out (expand/contract).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from moviectl.core.health.archiving import check as archiving_check
from moviectl.infra import probe
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import ExitCode, MoviectlError, UsageError
from moviectl.infra.server_facts import alembic_revision, server_version
from moviectl.infra.waiting import poll_until

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

CHECKS = ("reachable", "auth", "query", "migrations", "capacity", "archiving")
LIVE = ("reachable",)
READY = ("reachable", "auth", "query", "migrations")
CAPACITY_WARN = 0.8
PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
T = TypeVar("T")


@dataclass
class CheckResult:
    name: str
    status: str
    latency_ms: float
    detail: str
    exit_code: int = 0
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HealthReport:
    url: str
    db_host: str
    db_name: str
    checks: list[CheckResult]
    elapsed_ms: float
    pooler: Any = None  # pooler.PoolerReport when MOVIE_PGBOUNCER_ADMIN_URL is set

    @property
    def ok(self) -> bool:
        return all(c.status in (PASS, SKIP) for c in self.checks)

    @property
    def exit_code(self) -> int:
        for c in self.checks:
            if c.status in (FAIL, WARN):
                return c.exit_code or int(ExitCode.FAILED)
        return 0

    @property
    def failing(self) -> str | None:
        return next((c.name for c in self.checks if c.status in (FAIL, WARN)), None)

    @property
    def status(self) -> str:
        """``ok``, ``degraded`` (a warning, no failure: still serving) or ``fail``."""
        statuses = {c.status for c in self.checks}
        return "fail" if FAIL in statuses else "degraded" if WARN in statuses else "ok"

    __json_extra__ = ("ok", "status", "exit_code")


def select_checks(
    live: bool = False,
    ready: bool = False,
    only: list[str] | None = None,
    exclude: list[str] | None = None,
) -> list[str]:
    for name in [*(only or []), *(exclude or [])]:
        if name not in CHECKS:
            raise UsageError(f"unknown check {name!r}", hint=f"checks: {', '.join(CHECKS)}")
    names = list(LIVE if live else READY if ready else CHECKS)
    if only:
        names = [n for n in CHECKS if n in only]
    return [n for n in names if n not in (exclude or [])]


def reachable(t: DbTarget, timeout: float) -> tuple[str, str, int, dict[str, Any]]:
    """The pg_isready question (no SQLAlchemy, no psycopg: ``health --live``'s hot path)."""
    return probe.reachable_target(t, timeout)


class _Run:
    """State shared by the checks of one run: one psycopg connection (opened by ``auth``,
    reused by the checks after it), or a shared SQLAlchemy engine (``health --serve``).

    The one-shot path imports no SQLAlchemy: ``moviectl health`` starts in a fraction of
    the time, and its checks cost one login instead of two.
    """

    def __init__(
        self, target: DbTarget, connect_timeout: int, engine: Any = None, bound: float = 30.0
    ) -> None:
        self.target, self.connect_timeout = target, connect_timeout
        self.engine: Any = engine  # a shared one (health --serve) stays open
        self.conn: Any = None
        self.bound_ms = max(1, int(bound * 1000))  # statement_timeout and lock_timeout

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self) -> Any:
        from moviectl.infra.engine import connect

        return connect(
            self.target, connect_timeout=self.connect_timeout, application_name="moviectl"
        )

    def on_conn(self, read: Callable[[Any], T]) -> T:
        """``read`` on a psycopg connection: the shared engine's (its pool resets it after)
        or this run's, in a transaction whose statements and lock waits are bounded."""
        from moviectl.infra.engine import db_errors

        ms = self.bound_ms  # an int we computed: safe to spell in the statement

        def bounded(c: Any) -> T:
            with c.transaction():
                c.execute(f"SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}")
                return read(c)

        with db_errors(self.target, self.connect_timeout):
            if self.engine is not None:
                with self.engine.connect() as conn:
                    return bounded(conn.connection.driver_connection)
            if self.conn is None:
                self.conn = self._connect()
            return bounded(self.conn)

    def rows(self, *sql: str) -> list[list[tuple[Any, ...]]]:
        """The rows of each statement."""
        return self.on_conn(lambda c: [c.execute(q).fetchall() for q in sql])

    # each returns (status, detail, exit code, data)
    def reachable(self) -> tuple[str, str, int, dict[str, Any]]:
        return reachable(self.target, float(self.connect_timeout))

    def auth(self) -> tuple[str, str, int, dict[str, Any]]:
        t = self.target
        conn = self._connect()
        if self.engine is None and self.conn is None:
            self.conn = conn  # the checks after this one reuse the login
        else:
            conn.close()
        return PASS, f"logged in as {t.user} to {t.database}", 0, {}

    def query(self) -> tuple[str, str, int, dict[str, Any]]:
        def read(c: Any) -> tuple[Any, Any, str]:
            one, recovery = c.execute("SELECT 1, pg_is_in_recovery()").fetchone()
            return one, recovery, server_version(c)

        one, recovery, version = self.on_conn(read)
        pool = pool_state(self.engine) if self.engine is not None else ONE_CONNECTION
        data = {"server_version": version, "in_recovery": bool(recovery), "pool": pool}
        role = "read-only replica (in recovery)" if recovery else "primary"
        ok = PASS if one == 1 else FAIL
        return ok, f"SELECT 1 ok; PostgreSQL {version}, {role}", 0 if ok == PASS else 1, data

    def migrations(self) -> tuple[str, str, int, dict[str, Any]]:
        from moviectl.core.migrations.scripts import head_revision

        head = head_revision()
        current = self.on_conn(alembic_revision)
        data: dict[str, Any] = {"current": current, "head": head, "pending": 0, "ahead": False}
        if current == head:
            return PASS, f"at head {head}", 0, data
        if current is not None and not _known_revision(current):
            data["ahead"] = True
            return (
                WARN,
                f"database at {current}, ahead of this code's head {head} (a newer release "
                "migrated it): still serving; roll out the new code",
                int(ExitCode.FAILED),
                data,
            )
        data["pending"] = pending_count(current, head)
        return (
            FAIL,
            f"database at {current or 'base (no schema)'}, code at {head}: run `moviectl migrate`",
            int(ExitCode.BEHIND),
            data,
        )

    def capacity(self) -> tuple[str, str, int, dict[str, Any]]:
        # the longest open transaction in this database (idle in transaction included), not
        # this check's own: the forgotten BEGIN that blocks migrations and vacuum
        from moviectl.core.inspect.gauges import APP_DEAD_ROWS, BLOCKED_SESSIONS

        totals, by_db, dead = self.rows(
            "SELECT (SELECT count(*) FROM pg_stat_activity"
            "        WHERE backend_type = 'client backend'), "
            "current_setting('max_connections')::int, "
            "pg_database_size(current_database()), current_database(), "
            "(SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)"
            "   FROM pg_stat_activity WHERE datname = current_database()"
            "   AND xact_start IS NOT NULL AND pid <> pg_backend_pid()"
            f"   AND backend_type = 'client backend'), {BLOCKED_SESSIONS}",
            "SELECT coalesce(datname, ''), coalesce(state, 'unknown'), count(*) "
            "FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2",
            APP_DEAD_ROWS,
        )
        used, limit, size, datname, longest, blocked = totals[0]
        used, limit, size = int(used), int(limit), int(size)
        by_state: dict[str, int] = {}
        by_database: dict[str, dict[str, int]] = {}
        for db, state, n in by_db:
            by_state[state] = by_state.get(state, 0) + int(n)
            by_database.setdefault(db, {})[state] = int(n)
        ratio = used / limit if limit else 0
        data = {
            "connections": used,
            "max_connections": limit,
            "database_bytes": size,
            "datname": str(datname),
            "longest_transaction_seconds": round(float(longest), 3),
            "blocked_sessions": int(blocked),
            "dead_rows": [[str(schema), str(table), int(n)] for schema, table, n in dead],
            "by_state": by_state,
            "by_database": by_database,
        }
        detail = f"{used}/{limit} connections ({ratio:.0%}), database {size / 1048576:.1f} MiB"
        if ratio > CAPACITY_WARN:
            return WARN, detail + f" — above {CAPACITY_WARN:.0%}", 1, data
        return PASS, detail, 0, data

    def archiving(self) -> tuple[str, str, int, dict[str, Any]]:
        return archiving_check(self.on_conn)


_DEPENDS = {"auth": "reachable", "query": "auth"} | dict.fromkeys(CHECKS[3:], "query")


# the one-shot run's "pool": its one connection, in use (no pool, no overflow)
ONE_CONNECTION = {"size": 1, "checked_out": 1, "overflow": 0}


def pool_state(engine: Any) -> dict[str, int]:
    """The engine's pool as numbers an operator reads: size, in use, extra (never negative;
    SQLAlchemy's own ``overflow()`` is negative while the pool is not full)."""
    pool = engine.pool
    size = int(getattr(pool, "size", lambda: 0)())
    checked_out = int(getattr(pool, "checkedout", lambda: 0)())
    return {"size": size, "checked_out": checked_out, "overflow": max(0, checked_out - size)}


def run_health(
    settings: Settings,
    names: list[str] | None = None,
    *,
    engine: Any = None,
    bound: float | None = None,
    done: list[CheckResult] | None = None,
) -> HealthReport:
    """Run the selected checks in order (each skipped if what it needs failed).

    ``engine``: a shared engine to check through (``health --serve``), kept open.
    ``bound``: statement_timeout and lock_timeout of the checks' queries (default:
    MOVIE_STALL_TIMEOUT). ``done``: each result is appended as it is known (what a caller
    that stopped waiting reports).
    """
    report = run_checks(
        settings.target(),
        settings.connect_timeout,
        names,
        engine=engine,
        bound=settings.stall_timeout if bound is None else bound,
        done=done,
    )
    if engine is None and settings.pgbouncer_admin_url is not None:  # `health`, not a probe
        from moviectl.core.health.pooler import read_pooler

        report.pooler = read_pooler(settings)
    if engine is None and settings.backup_repo and list(names or CHECKS) == list(CHECKS):
        from moviectl.core.health.repositories import repository_check

        report.checks.append(_one("backups", lambda: repository_check(settings)))
    return report


def run_checks(
    target: DbTarget,
    connect_timeout: int,
    names: list[str] | None = None,
    *,
    engine: Any = None,
    bound: float = 30.0,
    done: list[CheckResult] | None = None,
) -> HealthReport:
    """``run_health`` on a target and timeout."""
    names = names or list(CHECKS)
    _preload(names)
    run = _Run(target, connect_timeout, engine, bound)
    started = time.perf_counter()
    results: dict[str, CheckResult] = {}
    try:
        for name in CHECKS:
            if name not in names:
                continue
            dep = _DEPENDS.get(name)
            if dep and dep in results and results[dep].status in (FAIL, SKIP):
                results[name] = CheckResult(name, SKIP, 0.0, f"skipped: {dep} failed")
                continue
            results[name] = _one(name, getattr(run, name))
            if done is not None:
                done.append(results[name])
    finally:
        run.close()
    t = run.target
    checks = [results[n] for n in CHECKS if n in results]
    elapsed = round((time.perf_counter() - started) * 1000, 2)
    return HealthReport(t.url(), t.host, t.database, checks, elapsed)


def _preload(names: list[str]) -> None:
    """Import what the checks need up front, so latencies measure the database, not imports."""
    if set(names) - set(LIVE):
        import psycopg  # noqa: F401

        import moviectl.infra.engine  # noqa: F401


def _one(name: str, fn: Callable[[], tuple[str, str, int, dict[str, Any]]]) -> CheckResult:
    started = time.perf_counter()
    try:
        status, detail, code, data = fn()
    except MoviectlError as exc:
        status, detail, code, data = FAIL, exc.message, int(exc.exit_code), {}
    latency = round((time.perf_counter() - started) * 1000, 2)
    return CheckResult(name, status, latency, detail, code, data)


def wait_healthy(
    settings: Settings,
    names: list[str],
    timeout: float,
    interval: float = 0.5,
    on_attempt: Callable[[HealthReport], None] | None = None,
) -> HealthReport:
    """Retry with backoff until no selected check fails (a warning is up: degraded) or
    ``timeout`` runs out."""

    def attempt() -> HealthReport:
        report = run_health(settings, names)
        if on_attempt:
            on_attempt(report)
        return report

    return poll_until(
        attempt,
        timeout,
        interval,
        done=lambda report: report.status != "fail",  # degraded is serving
        backoff=1.5,
        max_interval=max(interval, 5.0),
    )


def _known_revision(rev: str) -> bool:
    """Is ``rev`` one of the shipped scripts? (read without importing Alembic if it can)"""
    from moviectl.core.migrations.scripts import script_directory, script_revisions

    revisions = script_revisions()
    if revisions is not None:
        return rev in revisions
    return any(s.revision == rev for s in script_directory().walk_revisions())


def pending_count(current: str | None, head: str | None) -> int:
    """How many migrations lie between ``current`` (known to the code, or None: base) and
    ``head``, read from the scripts."""
    from moviectl.core.migrations.scripts import script_directory, script_revisions

    if current == head:
        return 0
    parents = script_revisions()
    if parents is None:
        parents = {s.revision: s.down_revision for s in script_directory().walk_revisions()}
    n, rev = 0, head
    while isinstance(rev, str) and rev != current and n <= len(parents):
        n, rev = n + 1, parents.get(rev)
    return n
