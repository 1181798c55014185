"""The pooler in front of the database, as PgBouncer's admin console tells it.

With MOVIE_PGBOUNCER_ADMIN_URL set (the ``pgbouncer`` pseudo-database, as a user in
PgBouncer's ``admin_users`` or ``stats_users``), ``health`` shows the pools and ``/metrics``
exports ``moviectl_pgbouncer_*``: clients active and waiting, server connections, the
longest client wait, and the transaction, query and wait-time totals. The console speaks
only the simple query protocol, outside transactions: an autocommit connection that
prepares nothing. A console that does not answer is reported, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from moviectl.infra.engine import connect
from moviectl.infra.errors import MoviectlError

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

ADMIN_DATABASE = "pgbouncer"  # the console itself: its own row in SHOW POOLS is left out


@dataclass
class PoolRow:
    database: str
    user: str
    pool_mode: str
    clients_active: int
    clients_waiting: int
    servers_active: int
    servers_idle: int
    max_wait_seconds: float


@dataclass
class PoolerReport:
    where: str  # host:port of the console
    up: bool
    error: str | None = None
    pools: list[PoolRow] = field(default_factory=list)
    # per database: transactions, queries, seconds clients waited for a server (totals)
    totals: dict[str, dict[str, float]] = field(default_factory=dict)


def read_pooler(settings: Settings) -> PoolerReport | None:
    """``SHOW POOLS`` and ``SHOW STATS`` from the admin console (None when not configured)."""
    from moviectl.infra.conninfo import parse_db_url

    if settings.pgbouncer_admin_url is None:
        return None
    url = settings.pgbouncer_admin_url.get_secret_value()
    target = parse_db_url(url, "MOVIE_PGBOUNCER_ADMIN_URL")
    report = PoolerReport(f"{target.host}:{target.port}", up=False)
    try:
        with connect(target, connect_timeout=settings.connect_timeout) as c:
            pools = _rows(c.execute("SHOW POOLS"))
            stats = _rows(c.execute("SHOW STATS"))
    except MoviectlError as exc:
        report.error = exc.message
        return report
    except Exception as exc:  # a console of another version, or not a console at all
        report.error = f"{target.host}:{target.port} did not answer SHOW POOLS/STATS: {exc}"
        return report
    report.up = True
    for p in pools:
        if p.get("database") == ADMIN_DATABASE:
            continue
        report.pools.append(
            PoolRow(
                database=str(p.get("database")),
                user=str(p.get("user")),
                pool_mode=str(p.get("pool_mode") or ""),
                clients_active=int(p.get("cl_active") or 0),
                clients_waiting=int(p.get("cl_waiting") or 0),
                servers_active=int(p.get("sv_active") or 0),
                servers_idle=int(p.get("sv_idle") or 0),
                max_wait_seconds=float(p.get("maxwait") or 0)
                + float(p.get("maxwait_us") or 0) / 1e6,
            )
        )
    for s in stats:
        if s.get("database") == ADMIN_DATABASE:
            continue
        report.totals[str(s.get("database"))] = {
            "transactions": float(s.get("total_xact_count") or 0),
            "queries": float(s.get("total_query_count") or 0),
            "wait_seconds": float(s.get("total_wait_time") or 0) / 1e6,  # microseconds
        }
    return report


def _rows(cur: Any) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def pooler_line(report: PoolerReport) -> str:
    """One line for ``health``'s text output."""
    if not report.up:
        return f"pooler: {report.where} did not answer ({report.error})"
    active = sum(p.clients_active for p in report.pools)
    waiting = sum(p.clients_waiting for p in report.pools)
    servers = sum(p.servers_active + p.servers_idle for p in report.pools)
    wait = max((p.max_wait_seconds for p in report.pools), default=0.0)
    modes = ", ".join(sorted({p.pool_mode for p in report.pools})) or "no pools yet"
    return (
        f"pooler: {report.where} ({modes}): {active} clients active, {waiting} waiting "
        f"(longest {wait:.1f} s), {servers} server connections"
    )


def add_pooler_metrics(registry: Any, report: PoolerReport | None) -> None:
    """``moviectl_pgbouncer_*`` into ``registry`` from a report read beforehand (off the
    event loop): up 0/1 always; per pool and per database every series, zeros included."""
    from prometheus_client import Gauge
    from prometheus_client.core import CounterMetricFamily

    if report is None:
        return

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Any:
        return Gauge(f"moviectl_pgbouncer_{name}", doc, labels, registry=registry)

    gauge("up", "1 when PgBouncer's admin console answered, else 0").set(int(report.up))
    pool_labels = ("database", "user")
    series = {
        "clients_active": gauge("clients_active", "Clients linked to a server", pool_labels),
        "clients_waiting": gauge("clients_waiting", "Clients waiting for a server", pool_labels),
        "servers_active": gauge("servers_active", "Server connections in use", pool_labels),
        "servers_idle": gauge("servers_idle", "Server connections idle", pool_labels),
        "max_wait_seconds": gauge(
            "max_wait_seconds", "How long the oldest waiting client has waited", pool_labels
        ),
    }
    for p in report.pools:
        for attr, g in series.items():
            g.labels(p.database, p.user).set(getattr(p, attr))

    totals = report.totals

    class Totals:  # counters PgBouncer keeps: exported as they are, not incremented here
        def collect(self) -> Any:
            docs = {
                "transactions": "Transactions pooled since PgBouncer started",
                "queries": "Queries pooled since PgBouncer started",
                "wait_seconds": "Seconds clients waited for a server since PgBouncer started",
            }
            for key, doc in docs.items():
                fam = CounterMetricFamily(f"moviectl_pgbouncer_{key}", doc, labels=["database"])
                for db, numbers in sorted(totals.items()):
                    fam.add_metric([db], numbers[key])
                yield fam

    registry.register(Totals())
