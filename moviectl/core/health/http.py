"""Health as a service: `/livez`, `/readyz`, `/healthz` and `/metrics`, as one ASGI app.

``create_app(settings)`` is what `moviectl health --serve` runs under uvicorn, and what the
movie service mounts next to its own routes (any ASGI framework: FastAPI's ``app.mount``);
``create_app(engine=app_engine)`` makes the pool gauges describe the app's own engine.

- ``/livez``: the process answers. Never the database, never behind another endpoint: it
  is answered on the event loop, which no check ever blocks (a database outage must not
  restart the pods; readiness takes them out of the Service instead).
- ``/readyz``: reachable, login, query and migrations at head: 503 otherwise. A database
  *ahead* of the code (a newer release migrated it) is 200 ``"status": "degraded"``.
- ``/healthz``: every check; a warning is 200 ``"degraded"``, only a failure is 503. The
  body is a superset of the movie service's contract (``{"status": "ok", "database":
  "postgres"}``).
- ``/metrics``: the ``/healthz`` report, the pool and the backups (``metrics.py``).
- ``X-Trace-Id`` is echoed when printable and short, else replaced by ``req-<8 hex>``; every
  log line of a request carries it with ``db_host`` and ``db_name``.

How an answer stays bounded: each report is computed in a worker thread of its own
(``Refresher``: one per endpoint, at most one computation at a time, so a hung check never
stacks threads) and read from its cache on the event loop without a lock. A report younger
than ``cache_seconds`` is served as is; an older one starts a refresh and is still served
while that refresh is younger than the deadline (MOVIE_PROBE_DEADLINE); a reader with
nothing recent enough waits for the refresh at most until the deadline, then gets 503 naming
the check still running. The checks' queries carry statement and lock timeouts of the same
length. Details (versions, user, sizes, raw errors) are shown only when ``details`` is on
(by default: only on a loopback bind).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from moviectl.core.health.checks import (
    CHECKS,
    FAIL,
    READY,
    SKIP,
    CheckResult,
    HealthReport,
    pool_state,
    run_health,
)
from moviectl.core.health.metrics import TEXT_FORMAT, Backups, backup_facts, metrics_body
from moviectl.core.health.pooler import PoolerReport, read_pooler
from moviectl.infra.errors import ExitCode
from moviectl.infra.jsonable import jsonable
from moviectl.infra.settings import Settings

log = logging.getLogger("moviectl.health")
ROUTES = {"/readyz": READY, "/healthz": CHECKS}
PATHS = ("/livez", "/readyz", "/healthz", "/metrics")
MAX_TARGET = 2048  # bytes of request target: longer is 414
_TRACE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces, bounded
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
T = TypeVar("T")
JSON = "application/json"


def loggable(text: str, limit: int = 200) -> str:
    """``text`` as one line of printable ASCII: control characters (a decoded ``%0d%0a``),
    backslashes and anything beyond ASCII become escapes, so a request cannot forge or
    break a log line."""
    more = "..." if len(text) > limit else ""
    return text[:limit].encode("unicode_escape").decode("ascii") + more


def trace_id(raw: bytes | None) -> str:
    """The caller's trace id when it is safe to echo and log, else a new ``req-<8 hex>``."""
    if raw:
        text = raw.decode("latin-1")
        if _TRACE.fullmatch(text):
            return text
    return f"req-{secrets.token_hex(4)}"


def verdict(report: HealthReport) -> tuple[int, str]:
    """(HTTP status, body status): a failure is 503, a warning alone is 200 "degraded"."""
    status = report.status
    return (503 if status == "fail" else 200), status


class Refresher(Generic[T]):
    """A value computed in a worker thread of its own, at most one computation at a time,
    read without a lock (see the module's docstring for when a reader waits)."""

    def __init__(
        self,
        name: str,
        compute: Callable[[list[CheckResult]], T],
        fresh: float,
        deadline: float,
    ) -> None:
        self.name, self.compute, self.fresh, self.deadline = name, compute, fresh, deadline
        self.pool = ThreadPoolExecutor(1, thread_name_prefix=f"moviectl-{name}")
        self._starting = threading.Lock()  # only to start one refresh; readers never take it
        self.value: T | None = None
        self.at = float("-inf")  # when ``value`` was computed (monotonic)
        self.running: Future[T] | None = None
        self.started = 0.0  # when ``running`` began
        self.done: list[CheckResult] = []  # what ``running`` has found so far

    def start(self) -> Future[T]:
        """The refresh under way, or a new one."""
        with self._starting:
            running = self.running
            if running is None:
                done: list[CheckResult] = []
                self.done, self.started = done, time.monotonic()
                running = self.running = self.pool.submit(self.compute, done)
                running.add_done_callback(self._finished)
            return running

    def _finished(self, fut: Future[T]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.value, self.at = fut.result(), time.monotonic()
        elif not fut.cancelled():
            log.error("%s: the refresh failed: %r", self.name, fut.exception())
        self.running = None

    async def get(self) -> T | None:
        """The value, or None when none recent enough came within the deadline."""
        now = time.monotonic()
        if now - self.at < self.fresh:
            return self.value
        running = self.start()
        left = self.started + self.deadline - now
        if left <= 0:  # running past the deadline: the cached value is too old to vouch for
            return None
        if self.value is not None and now - self.at < self.fresh + self.deadline:
            return self.value  # the refresh goes on in the background
        # asyncio.wait never cancels what it waits for (the refresh is shared)
        await asyncio.wait([asyncio.wrap_future(running)], timeout=left)
        return self.value if time.monotonic() - self.at < self.fresh + self.deadline else None

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class HealthService:
    """A private engine for the checks, and one ``Refresher`` per report: ``/readyz``'s,
    ``/healthz``'s (which ``/metrics`` shares) and the backup manifests'."""

    def __init__(
        self,
        settings: Settings,
        *,
        cache_seconds: float = 1.0,
        deadline: float | None = None,
        engine: Any = None,
    ) -> None:
        self.settings, self.cache_seconds = settings, cache_seconds
        self.deadline = settings.probe_deadline if deadline is None else deadline
        self.app_engine = engine  # the mounting app's: what the pool gauges describe
        self._engine: Any = None
        self._engine_made = threading.Lock()  # worker threads only
        fresh, wait = cache_seconds, self.deadline
        self.ready = Refresher("readyz", lambda done: self._checks(READY, done), fresh, wait)
        self.all = Refresher("healthz", lambda done: self._checks(CHECKS, done), fresh, wait)
        self.backups = Refresher("backups", lambda _: backup_facts(settings), max(fresh, 5.0), wait)
        # PgBouncer's console, when configured: read off the event loop, never gating a probe
        self.pooler: Refresher[PoolerReport | None] | None = (
            Refresher("pooler", lambda _: read_pooler(settings), max(fresh, 5.0), wait)
            if settings.pgbouncer_admin_url is not None
            else None
        )
        self._last_metrics: tuple[Any, Any, Any, Any, bytes] | None = None  # the last /metrics body
        self._encoded: dict[str, tuple[HealthReport, bytes]] = {}  # path: (report, its JSON)

    def engine(self) -> Any:
        with self._engine_made:
            if self._engine is None:
                from moviectl.infra.engine import make_engine

                self._engine = make_engine(self.settings, application_name="moviectl health")
            return self._engine

    def _checks(self, names: tuple[str, ...], done: list[CheckResult]) -> HealthReport:
        """One round of checks (in a worker thread), bounded by the deadline on the server."""
        try:
            return run_health(
                self.settings, list(names), engine=self.engine(), bound=self.deadline, done=done
            )
        except Exception as exc:  # a bug: a failed report (and the log) instead of none
            log.exception("health checks failed")
            t = self.settings.target()
            fail = CheckResult(names[0], FAIL, 0.0, f"internal error: {type(exc).__name__}", 10)
            return HealthReport(t.url(), t.host, t.database, [fail], 0.0)

    def late(self, names: tuple[str, ...], r: Refresher[HealthReport]) -> HealthReport:
        """The report of a refresh that missed the deadline: what it found so far, the check
        still running as failed, the rest skipped."""
        found = list(r.done)
        names_left = [n for n in names if n not in {c.name for c in found}]
        ms = round((time.monotonic() - r.started) * 1000, 2)
        checks = found
        if names_left:
            stuck = names_left[0]
            detail = (
                f"no answer within {self.deadline:g}s (still running: a stalled server or a "
                "held lock)"
            )
            checks.append(CheckResult(stuck, FAIL, ms, detail, int(ExitCode.UNREACHABLE)))
            checks += [
                CheckResult(n, SKIP, 0.0, f"skipped: {stuck} did not answer")
                for n in names_left[1:]
            ]
        t = self.settings.target()
        return HealthReport(t.url(), t.host, t.database, checks, ms)

    async def report(self, path: str) -> HealthReport:
        r = self.ready if path == "/readyz" else self.all
        return await r.get() or self.late(ROUTES[path], r)

    async def metrics(self) -> bytes:
        report = await self.report("/healthz")
        backups: Backups | None = await self.backups.get()
        pooler = await self.pooler.get() if self.pooler is not None else None
        engine = self.app_engine if self.app_engine is not None else self._engine
        pool = pool_state(engine) if engine is not None else None
        key = (report, backups, pooler, tuple(pool.values()) if pool else None)
        cached = self._last_metrics
        if (
            cached is not None
            and cached[0] is key[0]
            and cached[1] is key[1]
            and cached[2] is key[2]
            and cached[3] == key[3]
        ):
            return cached[4]
        body = metrics_body(report, pool, backups, pooler)
        self._last_metrics = (*key, body)
        return body

    def encoded(self, path: str, report: HealthReport, details: bool, trace: str) -> bytes:
        """The JSON body: serialized once per report, the trace id spliced in per request."""
        hit = self._encoded.get(path)
        if hit is None or hit[0] is not report:
            body = _body(report, verdict(report)[1], details)
            hit = self._encoded[path] = (report, json.dumps(body).encode())
        return b'{"trace_id": ' + json.dumps(trace).encode() + b", " + hit[1][1:]

    def warm(self) -> None:
        """Start the first refreshes (imports and the first login happen before a probe)."""
        for r in self._refreshers():
            r.start()

    def _refreshers(self) -> list[Refresher[Any]]:
        return [self.ready, self.all, self.backups, *([self.pooler] if self.pooler else [])]

    def close(self) -> None:
        for r in self._refreshers():
            r.close()
        if self._engine is not None:
            self._engine.dispose()


def _body(report: HealthReport, status: str, details: bool) -> dict[str, Any]:
    checks = []
    for c in report.checks:
        item: dict[str, Any] = {"name": c.name, "status": c.status, "latency_ms": c.latency_ms}
        if details:
            item.update(detail=c.detail, data=jsonable(c.data))
        checks.append(item)
    body: dict[str, Any] = {"status": status, "database": "postgres"}
    body["checks"] = checks
    if details:
        body.update(url=report.url, db_host=report.db_host, db_name=report.db_name)
    return body


def create_app(
    settings: Settings | None = None,
    *,
    details: bool = False,
    cache_seconds: float = 1.0,
    engine: Any = None,
    deadline: float | None = None,
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app (settings default to MOVIE_* / .env, read once).

    ``engine``: the mounting app's SQLAlchemy engine, which the pool gauges then describe
    (the checks keep a small engine of their own, so a hung check never holds one of the
    app's connections). ``deadline``: default MOVIE_PROBE_DEADLINE.
    """
    if settings is None:
        from moviectl.infra.settings import load_settings

        settings = load_settings()
    service = HealthService(settings, cache_seconds=cache_seconds, deadline=deadline, engine=engine)
    target = settings.target()
    host, name = loggable(target.host), loggable(target.database)

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    service.warm()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await asyncio.to_thread(service.close)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = dict(scope.get("headers") or [])
        trace = trace_id(headers.get(b"x-trace-id"))
        path, method = scope["path"], scope["method"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):  # mounted under a prefix (FastAPI's app.mount)
            path = path[len(root) :] or "/"
        payload: dict[str, Any] | bytes
        kind = JSON
        if scope.get("http_version", "1.1") not in ("1.0", "1.1", "2"):
            code, payload = 505, {"error": "HTTP version not supported"}
        elif len(scope.get("raw_path") or path) > MAX_TARGET:
            code, payload = 414, {"error": "URI too long"}
        elif method not in ("GET", "HEAD"):
            code, payload = 405, {"error": "method not allowed"}
        elif path == "/livez":
            code, payload = 200, {"status": "ok", "checks": [], "trace_id": trace}
        elif path == "/metrics":
            code, payload, kind = 200, await service.metrics(), TEXT_FORMAT
        elif path in ROUTES:
            report = await service.report(path)
            code = verdict(report)[0]
            payload = service.encoded(path, report, details, trace)
        else:
            code, payload = 404, {"error": "not found", "paths": list(PATHS)}
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [
                    (b"content-type", kind.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-trace-id", trace.encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})
        log.info(
            "%s %s %s trace_id=%s db_host=%s db_name=%s",
            loggable(method),
            loggable(path),  # never a line of its own
            code,
            trace,
            host,
            name,
            extra={"trace_id": trace, "db_host": host, "db_name": name},
        )

    return app
