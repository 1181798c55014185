"""`/metrics` in Prometheus' text format (the prometheus_client library).

Per check: status and latency; the shared engine's pool; connections by state against
max_connections; database size; pending migrations; and, read from the backup directory's
manifests, the age of the newest backup and of the last successful restore drill.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moviectl.core.health.checks import HealthReport, pool_state
from moviectl.core.health.pooler import add_pooler_metrics
from moviectl.infra.errors import MoviectlError
from moviectl.infra.settings import Settings

STATUS_VALUE = {"pass": 1.0, "warn": 0.5, "fail": 0.0, "skip": 0.0}


def _age(value: object, now: datetime) -> float | None:
    """Seconds since an ISO timestamp; one without a zone is UTC (as moviectl writes them,
    and as ``backup list`` reads them). None when it is not a timestamp at all."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return (now - at).total_seconds()


def _ages(settings: Settings) -> tuple[float | None, float | None, int]:
    """Seconds since the newest backup finished and since the last drill that passed, and
    how many manifests could not be read (a scrape never fails on one: it is counted)."""
    from moviectl.core.backups.manifest import list_backups

    now = datetime.now(UTC)
    newest = verified = None
    try:
        entries = list_backups(settings, Path(settings.backup_dir))
    except (OSError, ValueError, TypeError, MoviectlError):  # unreadable directory or list
        return None, None, 1
    unreadable = 0
    for e in entries:
        if not e.manifest:
            unreadable += 1
            continue
        made, drilled = _age(e.created, now), _age(e.verified_at, now)
        if e.created and made is None:
            unreadable += 1
        if made is not None:
            newest = made if newest is None else min(newest, made)
        if drilled is not None:
            verified = drilled if verified is None else min(verified, drilled)
    return newest, verified, unreadable


def _pending(current: str | None, head: str | None) -> int:
    """How many migrations lie between the database and the code (read from the scripts)."""
    from moviectl.core.migrations.scripts import script_revisions

    if current == head:
        return 0
    parents = script_revisions() or {}
    n, rev = 0, head
    while isinstance(rev, str) and rev != current and n <= len(parents):
        n, rev = n + 1, parents.get(rev)
    return n


def metrics_body(settings: Settings, report: HealthReport, service: Any) -> bytes:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(name, doc, labels, registry=registry)

    up = gauge("moviectl_check_up", "1 pass, 0.5 warn, 0 fail or skipped", ("check",))
    latency = gauge("moviectl_check_latency_seconds", "How long the check took", ("check",))
    for c in report.checks:
        up.labels(c.name).set(STATUS_VALUE.get(c.status, 0.0))
        latency.labels(c.name).set(c.latency_ms / 1000)
    by_name = {c.name: c for c in report.checks}
    if getattr(service, "_engine", None) is not None:
        pool = pool_state(service._engine)
        for key, doc in (
            ("size", "Connections kept in the pool"),
            ("checked_out", "Pool connections in use"),
            ("overflow", "Connections in use beyond the pool size"),
        ):
            gauge(f"moviectl_pool_{key}", doc).set(pool[key])
    capacity = by_name.get("capacity")
    if capacity and capacity.data:
        conns = gauge("moviectl_connections", "Client connections by state", ("state",))
        for state, n in (capacity.data.get("by_state") or {}).items():
            conns.labels(state).set(n)
        gauge("moviectl_max_connections", "The server's max_connections").set(
            capacity.data["max_connections"]
        )
        gauge("moviectl_database_size_bytes", "Size of the app database").set(
            capacity.data["database_bytes"]
        )
    migrations = by_name.get("migrations")
    if migrations and migrations.data:
        gauge("moviectl_migrations_pending", "Migrations the database lacks").set(
            _pending(migrations.data.get("current"), migrations.data.get("head"))
        )
    newest, verified, unreadable = _ages(settings)
    gauge(
        "moviectl_backup_manifests_unreadable",
        "Backups whose manifest is missing or unreadable (left out of the ages)",
    ).set(unreadable)
    if newest is not None:
        gauge("moviectl_backup_newest_age_seconds", "Age of the newest backup").set(newest)
    if verified is not None:
        gauge("moviectl_backup_verified_age_seconds", "Age of the last passed restore drill").set(
            verified
        )
    add_pooler_metrics(registry, settings)  # moviectl_pgbouncer_*, when configured
    return bytes(generate_latest(registry))
