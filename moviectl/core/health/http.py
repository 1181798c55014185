"""Health as a service: `/livez`, `/readyz`, `/healthz` and `/metrics`, as one ASGI app.

``create_app(settings)`` is what `moviectl health --serve` runs under uvicorn, and what the
movie service mounts next to its own routes (any ASGI framework: FastAPI's ``app.mount``).

- ``/livez``: the process answers and the server accepts connections (the pg_isready probe).
- ``/readyz``: reachable, login, query and migrations at head: 503 otherwise.
- ``/healthz``: every check; a warning (capacity) is 200 with ``"status": "degraded"``, only a
  failure is 503. The body is a superset of the movie service's contract
  (``{"status": "ok", "database": "postgres"}``).
- ``X-Trace-Id`` is echoed when printable and short, else replaced by ``req-<8 hex>``; every log
  line of a request carries it with ``db_host`` and ``db_name``.
- Checks run over one shared engine and are cached for ``cache_seconds``, so a burst of
  probes costs one round of checks. Details (versions, user, sizes, raw errors) are shown
  only when ``details`` is on (by default: only on a loopback bind).
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
from typing import Any

from moviectl.core.health.checks import CHECKS, LIVE, READY, HealthReport, run_health
from moviectl.core.health.metrics import metrics_body
from moviectl.infra.jsonable import jsonable
from moviectl.infra.settings import Settings

log = logging.getLogger("moviectl.health")
ROUTES = {"/livez": LIVE, "/readyz": READY, "/healthz": CHECKS}
MAX_TARGET = 2048  # bytes of request target: longer is 414
_TRACE = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces, bounded
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
    statuses = {c.status for c in report.checks}
    if "fail" in statuses:
        return 503, "fail"
    if "warn" in statuses:
        return 200, "degraded"
    return 200, "ok"


class HealthService:
    """One shared engine and a short cache of reports per set of checks."""

    def __init__(self, settings: Settings, *, cache_seconds: float = 1.0) -> None:
        self.settings, self.cache_seconds = settings, cache_seconds
        self._engine: Any = None
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[float, HealthReport]] = {}

    def engine(self) -> Any:
        if self._engine is None:
            from moviectl.infra.engine import make_engine

            self._engine = make_engine(self.settings, application_name="moviectl health")
        return self._engine

    def report(self, names: tuple[str, ...]) -> HealthReport:
        """The checks' report, at most ``cache_seconds`` old (one refresh at a time)."""
        with self._lock:
            hit = self._cache.get(names)
            if hit and time.monotonic() - hit[0] < self.cache_seconds:
                return hit[1]
            engine = self.engine() if set(names) - set(LIVE) else None
            report = run_health(self.settings, list(names), engine=engine)
            self._cache[names] = (time.monotonic(), report)
            return report

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def _body(report: HealthReport, status: str, trace: str, details: bool) -> dict[str, Any]:
    checks = []
    for c in report.checks:
        item: dict[str, Any] = {"name": c.name, "status": c.status, "latency_ms": c.latency_ms}
        if details:
            item.update(detail=c.detail, data=jsonable(c.data))
        checks.append(item)
    body: dict[str, Any] = {"status": status, "database": "postgres", "trace_id": trace}
    body["checks"] = checks
    if details:
        body.update(url=report.url, db_host=report.db_host, db_name=report.db_name)
    return body


def create_app(
    settings: Settings | None = None, *, details: bool = False, cache_seconds: float = 1.0
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    """The ASGI app (settings default to MOVIE_* / .env, read once)."""
    if settings is None:
        from moviectl.infra.settings import load_settings

        settings = load_settings()
    service = HealthService(settings, cache_seconds=cache_seconds)
    target = settings.target()

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
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
        shown = loggable(path)  # for the log: never a line of its own
        host, name = loggable(target.host), loggable(target.database)
        extra = {"trace_id": trace, "db_host": host, "db_name": name}
        payload: dict[str, Any] | bytes
        if scope.get("http_version", "1.1") not in ("1.0", "1.1", "2"):
            code, payload, kind = 505, {"error": "HTTP version not supported"}, "application/json"
        elif len(scope.get("raw_path") or path) > MAX_TARGET:
            code, payload, kind = 414, {"error": "URI too long"}, "application/json"
        elif method not in ("GET", "HEAD"):
            code, payload, kind = 405, {"error": "method not allowed"}, "application/json"
        elif path == "/metrics":
            report = await asyncio.to_thread(service.report, CHECKS)
            data = await asyncio.to_thread(metrics_body, settings, report, service)
            code, payload, kind = 200, data, "text/plain; version=0.0.4; charset=utf-8"
        elif path in ROUTES:
            report = await asyncio.to_thread(service.report, ROUTES[path])
            code, status = verdict(report)
            payload, kind = _body(report, status, trace, details), "application/json"
        else:
            code, kind = 404, "application/json"
            payload = {"error": "not found", "paths": [*ROUTES, "/metrics"]}
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
            shown,
            code,
            trace,
            host,
            name,
            extra=extra,
        )

    return app
