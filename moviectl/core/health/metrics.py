"""`/metrics` in Prometheus' text format (the prometheus_client library), by the conventions
of Prometheus and postgres_exporter: up-style gauges are 0 or 1 (a warning is a separate
``moviectl_check_status`` series), a count that is 0 is a series reading 0 (never a missing
one), times are ``*_timestamp_seconds`` (0: never, so "never verified" can alert), and series
about one database carry its ``datname``.

The pool gauges describe the engine the caller passes: the app's own when the health app is
mounted with ``create_app(engine=...)``, else ``health --serve``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moviectl.core.health.checks import FAIL, PASS, SKIP, WARN, HealthReport
from moviectl.core.health.pooler import PoolerReport, add_pooler_metrics
from moviectl.core.health.repositories import (
    UPLOADS_TTL,
    RepoFacts,
    add_repository_metrics,
    read_repositories,
)
from moviectl.infra.errors import MoviectlError
from moviectl.infra.settings import Settings

STATUSES = (PASS, WARN, FAIL, SKIP)
# pg_stat_activity's states (PostgreSQL 15-18): each is a series, 0 when no backend is in it
STATES = (
    "active",
    "idle",
    "idle in transaction",
    "idle in transaction (aborted)",
    "fastpath function call",
    "disabled",
)
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Backups:
    """From the backup directory's manifests: when the newest backup finished and when the
    last restore drill passed (Unix seconds; 0: never), and how many manifests could not be
    read (a scrape never fails on one: it is counted)."""

    last: float
    last_verified: float
    unreadable: int
    pitr: Pitr | None = None  # None: no PITR repository (the series are left out)
    # MOVIE_BACKUP_REPO's repositories (repositories.py); None: not set (left out)
    repositories: tuple[RepoFacts, ...] | None = None


@dataclass(frozen=True)
class Pitr:
    """From the PITR repository (file system only): the newest base backup's consistent
    time, the newest recovery point a drill reached, the newest archived WAL file's write
    time (its age is the archive lag, the recovery point objective met). Unix seconds."""

    last_base: float
    last_verified_point: float
    last_archived: float


def pitr_facts(settings: Settings) -> Pitr | None:
    from moviectl.core.pitr.repo import store_of
    from moviectl.core.pitr.store import LocalStore

    store = store_of(settings)
    if not isinstance(store, LocalStore) or not store.root.is_dir():
        return None
    try:
        bases = store.bases()
        wal = [w for w in store.wal_files() if not w.name.endswith(".tmp")]
    except (OSError, ValueError, TypeError):
        return Pitr(0.0, 0.0, 0.0)
    drilled = [b.drill.get("recovered_to") for b in bases if b.drill and b.drill.get("ok")]
    return Pitr(
        max((_timestamp(b.finished_at) or 0.0 for b in bases), default=0.0),
        max((_timestamp(t) or 0.0 for t in drilled), default=0.0),
        max((w.mtime for w in wal), default=0.0),
    )


def _timestamp(value: object) -> float | None:
    """Unix seconds of an ISO timestamp; one without a zone is UTC (as moviectl writes them,
    and as ``backup list`` reads them). None when it is not a timestamp at all."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.timestamp()


def backup_facts(settings: Settings) -> Backups:
    """Read the manifests (file system only: never the database)."""
    from moviectl.core.backups.manifest import list_backups

    repos = tuple(read_repositories(settings, UPLOADS_TTL)) if settings.backup_repo else None
    try:
        entries = list_backups(settings, Path(settings.backup_dir))
    except (OSError, ValueError, TypeError, MoviectlError):  # unreadable directory or list
        return Backups(0.0, 0.0, 1, pitr_facts(settings), repos)
    last = verified = 0.0
    unreadable = 0
    for e in entries:
        if not e.manifest:
            unreadable += 1
            continue
        made, drilled = _timestamp(e.created), _timestamp(e.verified_at)
        if e.created and made is None:
            unreadable += 1
        last = max(last, made or 0.0)
        verified = max(verified, drilled or 0.0)
    return Backups(last, verified, unreadable, pitr_facts(settings), repos)


def metrics_body(
    report: HealthReport,
    pool: dict[str, int] | None,
    backups: Backups | None,
    pooler: PoolerReport | None = None,
) -> bytes:
    """The exposition of one report (a few hundred microseconds: built on the event loop).

    ``pool``: the engine's pool (``checks.pool_state``), or None to leave it out.
    ``backups``: None when the manifests have not been read yet (the series are left out
    rather than read as "never").
    """
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    db = report.db_name

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, doc, labels, registry=registry)

    by_name = {c.name: c for c in report.checks}
    query = by_name.get("query")
    gauge(
        "moviectl_database_up", "1 when the database answers a query, else 0", ("datname",)
    ).labels(db).set(1 if query is not None and query.status == PASS else 0)
    up = gauge("moviectl_check_up", "1 when the check passed or only warned, else 0", ("check",))
    status = gauge(
        "moviectl_check_status",
        "1 for the check's status (pass, warn, fail, skip)",
        ("check", "status"),
    )
    latency = gauge("moviectl_check_latency_seconds", "How long the check took", ("check",))
    for c in report.checks:
        up.labels(c.name).set(1 if c.status in (PASS, WARN) else 0)
        for s in STATUSES:
            status.labels(c.name, s).set(1 if c.status == s else 0)
        latency.labels(c.name).set(c.latency_ms / 1000)
    if pool is not None:
        for key, doc in (
            ("size", "Connections kept in the pool"),
            ("checked_out", "Pool connections in use"),
            ("overflow", "Connections in use beyond the pool size"),
        ):
            gauge(f"moviectl_pool_{key}", doc).set(pool[key])
    capacity = by_name.get("capacity")
    if capacity is not None and capacity.data:
        data = capacity.data
        conns = gauge(
            "moviectl_connections", "Client connections by database and state", ("datname", "state")
        )
        by_database: dict[str, dict[str, int]] = {db: {}, **data.get("by_database", {})}
        for name, states in by_database.items():
            for state in (*STATES, *(s for s in states if s not in STATES)):
                conns.labels(name, state).set(states.get(state, 0))
        gauge("moviectl_max_connections", "The server's max_connections").set(
            data["max_connections"]
        )
        gauge("moviectl_database_size_bytes", "Size of the database", ("datname",)).labels(db).set(
            data["database_bytes"]
        )
        gauge(
            "moviectl_longest_transaction_seconds",
            "Age of the oldest open transaction in the database (idle in transaction included)",
            ("datname",),
        ).labels(db).set(data.get("longest_transaction_seconds", 0))
        gauge(
            "moviectl_blocked_sessions",
            "Sessions of the database waiting for a lock another session holds",
            ("datname",),
        ).labels(db).set(data.get("blocked_sessions", 0))
        dead = gauge(  # the app's tables only (gauges.py); every table: postgres_exporter
            "moviectl_table_dead_tuples",
            "Dead rows of the app's tables (pg_stat_user_tables.n_dead_tup)",
            ("datname", "schemaname", "relname"),
        )
        for schema, table, n in data.get("dead_rows", []):
            dead.labels(db, schema, table).set(n)
    migrations = by_name.get("migrations")
    if migrations is not None and migrations.data:
        gauge("moviectl_migrations_pending", "Migrations the database lacks", ("datname",)).labels(
            db
        ).set(migrations.data.get("pending", 0))
        gauge(
            "moviectl_migrations_ahead",
            "1 when the database is at a revision this code does not know (a newer release "
            "migrated it), else 0",
            ("datname",),
        ).labels(db).set(1 if migrations.data.get("ahead") else 0)
    if backups is not None:
        gauge(
            "moviectl_last_backup_timestamp_seconds",
            "When the newest backup finished (Unix time; 0: none)",
        ).set(backups.last)
        gauge(
            "moviectl_last_verified_backup_timestamp_seconds",
            "When the last restore drill passed (Unix time; 0: never)",
        ).set(backups.last_verified)
        gauge(
            "moviectl_backup_manifests_unreadable",
            "Backups whose manifest is missing or unreadable (left out of the timestamps)",
        ).set(backups.unreadable)
    if backups is not None and backups.pitr is not None:
        for key, value, doc in (
            ("base_backup", backups.pitr.last_base, "When the newest base backup is consistent"),
            (
                "verified_recovery_point",
                backups.pitr.last_verified_point,
                "The newest moment a PITR drill recovered to",
            ),
            ("archived_wal", backups.pitr.last_archived, "When the newest WAL file was archived"),
        ):
            gauge(f"moviectl_pitr_last_{key}_timestamp_seconds", f"{doc} (Unix time; 0: none)").set(
                value
            )
    add_pooler_metrics(registry, pooler)  # moviectl_pgbouncer_*, when configured
    if backups is not None:  # moviectl_backup_repository_*, when MOVIE_BACKUP_REPO is set
        add_repository_metrics(registry, list(backups.repositories or []) or None)
    return bytes(generate_latest(registry))
