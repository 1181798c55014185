"""`moviectl health --serve PORT`: GET /healthz → 200/503 with the JSON report."""

from __future__ import annotations

import json
import logging
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from moviectl.core.health.checks import run_health
from moviectl.infra.jsonable import jsonable
from moviectl.infra.settings import Settings

log = logging.getLogger("moviectl.health")


def make_server(settings: Settings, names: list[str], host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        server_version = "moviectl-health"

        def do_GET(self) -> None:
            trace = self.headers.get("X-Trace-Id") or uuid.uuid4().hex
            if self.path.split("?")[0] not in ("/healthz", "/livez", "/readyz"):
                self._send(404, {"error": "not found", "paths": ["/healthz"]}, trace)
                return
            report = run_health(settings, names)
            body = {"ok": report.ok, "trace_id": trace, **jsonable(report)}
            self._send(200 if report.ok else 503, body, trace)

        def _send(self, code: int, body: dict[str, Any], trace: str) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Trace-Id", trace)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            t = settings.target()
            log.info(
                "%s trace_id=%s db_host=%s db_name=%s",
                format % args,
                self.headers.get("X-Trace-Id", "-"),
                t.host,
                t.database,
            )

    return ThreadingHTTPServer((host, port), Handler)
