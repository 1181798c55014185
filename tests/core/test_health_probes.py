"""Probes an orchestrator can trust: `/livez` answers from the process alone while the
database hangs and the other endpoints are loaded; `/readyz` and `/healthz` stay bounded; a
database ahead of the code is "degraded", not down; behind is 503. The real `health
--serve` process, a real locked table and a real stalled listener."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import Cli, health_serving, wait_for
from tests.core.test_health_http import _get

DEFAULT_DEADLINE = "0.8"  # MOVIE_PROBE_DEADLINE's default, spelled out


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("Threads:")))


@contextlib.contextmanager
def _hammering(port: int, paths: tuple[str, ...], each: int = 2) -> Iterator[dict[str, Any]]:
    """``each`` keep-alive clients per path, asking again and again until the block ends;
    the slowest answer per path and the statuses seen."""
    stop = threading.Event()
    seen: dict[str, Any] = {"slowest": dict.fromkeys(paths, 0.0), "statuses": set(), "n": 0}

    def client(path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while not stop.is_set():
            started = time.monotonic()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
            except OSError:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            took = time.monotonic() - started
            seen["slowest"][path] = max(seen["slowest"][path], took)
            seen["statuses"].add((path, resp.status))
            seen["n"] += 1
        conn.close()

    workers = [threading.Thread(target=client, args=(p,)) for p in paths for _ in range(each)]
    for w in workers:
        w.start()
    try:
        yield seen
    finally:
        stop.set()
        for w in workers:
            w.join(60)


def _livez_latencies(port: int, n: int = 200) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for _ in range(n):
        started = time.monotonic()
        conn.request("GET", "/livez")
        resp = conn.getresponse()
        body = resp.read()
        took.append(time.monotonic() - started)
        assert resp.status == 200 and json.loads(body)["status"] == "ok"
    conn.close()
    return took


@contextlib.contextmanager
def _locked_table(url: str) -> Iterator[str]:
    """The table the migrations check reads, held in ACCESS EXCLUSIVE by another session."""
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        yield url
        holder.rollback()


@contextlib.contextmanager
def _stalled_server() -> Iterator[str]:
    """A TCP listener that never accepts and never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield f"postgresql://movie:pw@127.0.0.1:{s.getsockname()[1]}/movies"


@pytest.mark.parametrize("hang", ["locked-table", "stalled-server"])
def test_livez_is_fast_while_the_database_hangs_and_the_other_endpoints_are_loaded(
    hang, movie_db_url, tmp_path
):
    hung = _locked_table(movie_db_url) if hang == "locked-table" else _stalled_server()
    with (
        hung as url,
        health_serving(
            url, tmp_path / "log", MOVIE_PROBE_DEADLINE=DEFAULT_DEADLINE, MOVIE_CONNECT_TIMEOUT="5"
        ) as (port, proc),
    ):
        with _hammering(port, ("/readyz", "/healthz", "/metrics")) as seen:
            assert wait_for(lambda: seen["n"] > 30, 60)
            took = sorted(_livez_latencies(port))
            threads = _threads(proc.pid)
        p50, p99 = statistics.median(took), took[int(len(took) * 0.99) - 1]
        print(
            f"{hang}: /livez p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {took[-1]:.3f} s"
        )
        # generous bounds (a shared 2-core machine): before, /livez took 9 s to 18.8 s here.
        # The slowest of 200 (tens of ms, beside six client threads here) takes one long
        # stall of either process on a loaded CI to pass 1 s; 3 s still tells the bug apart
        assert p50 < 0.1 and took[-1] < 3.0, (p50, took[-1])
        assert ("/readyz", 200) not in seen["statuses"]
        assert ("/readyz", 503) in seen["statuses"] and ("/healthz", 503) in seen["statuses"]
        assert max(seen["slowest"].values()) < 5, seen["slowest"]  # the deadline, not the hang
        # one worker per report however many probes wait: a hung check stacks no threads
        assert threads < 20, threads
        resp, body = _get(port, "/readyz")
        checks = {c["name"]: c for c in json.loads(body)["checks"]}
        stuck = "migrations" if hang == "locked-table" else "reachable"
        assert resp.status == 503 and checks[stuck]["status"] == "fail", body
        # the refresh still running (0.8 s deadline), or the last one done: its own timeout
        assert (
            "timeout" in checks[stuck]["detail"] or "no answer within" in checks[stuck]["detail"]
        ), checks[stuck]
    if hang == "locked-table":  # released: ready again
        with health_serving(movie_db_url, tmp_path / "log2") as (port, _):
            assert wait_for(lambda: _get(port, "/readyz")[0].status == 200, 15)


def _metrics(port: int) -> dict[str, float]:
    resp, body = _get(port, "/metrics")
    assert resp.status == 200
    return {
        ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
        for ln in body.decode().splitlines()
        if ln and not ln.startswith("#")
    }


def _db(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def test_a_database_ahead_of_the_code_is_degraded_not_down(movie_db_url, tmp_path):
    """Release N+1's migration ran first: the old pods stay ready (200 degraded)."""
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("UPDATE alembic_version SET version_num = '0003_from_the_next_release'")
    with health_serving(movie_db_url, tmp_path / "log", MOVIE_PROBE_DEADLINE="5") as (port, _):
        for path in ("/readyz", "/healthz"):
            resp, body = _get(port, path)
            doc = json.loads(body)
            assert resp.status == 200 and doc["status"] == "degraded", body
            assert {c["name"]: c["status"] for c in doc["checks"]}["migrations"] == "warn"
        m = _metrics(port)
    db = _db(movie_db_url)
    assert m[f'moviectl_migrations_ahead{{datname="{db}"}}'] == 1
    assert m[f'moviectl_migrations_pending{{datname="{db}"}}'] == 0
    assert m['moviectl_check_up{check="migrations"}'] == 1
    assert m['moviectl_check_status{check="migrations",status="warn"}'] == 1
    cli = Cli({"MOVIE_DATABASE_URL": movie_db_url})
    r = cli("health", "--json")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["status"] == "degraded", r.output  # a warning, exit 1
    migrations = next(c for c in doc["checks"] if c["name"] == "migrations")
    assert migrations["status"] == "warn" and "ahead of this code" in migrations["detail"]
    assert "degraded (migrations)" in cli("health").stdout
    started = time.monotonic()  # --wait: degraded is up, it does not wait for the timeout
    assert cli("health", "--ready", "--wait", "--timeout", "60").exit_code == 1
    assert time.monotonic() - started < 30


def test_a_database_behind_the_code_is_not_ready(cli, movie_db_url, tmp_path):
    assert cli("migrate", "down", "--to", "0001", "--yes").exit_code == 0
    with health_serving(movie_db_url, tmp_path / "log", MOVIE_PROBE_DEADLINE="5") as (port, _):
        resp, body = _get(port, "/readyz")
        assert resp.status == 503 and json.loads(body)["status"] == "fail", body
        m = _metrics(port)
    db = _db(movie_db_url)
    assert m[f'moviectl_migrations_pending{{datname="{db}"}}'] == 1
    assert m[f'moviectl_migrations_ahead{{datname="{db}"}}'] == 0


def test_metrics_follow_the_conventions(movie_db_url, tmp_path):
    """0/1 gauges, zero series, 0 for "never", datname, the longest open transaction."""
    env = {"MOVIE_PROBE_DEADLINE": "5", "MOVIE_BACKUP_DIR": str(tmp_path / "none")}
    with (
        psycopg.connect(movie_db_url) as forgotten,  # BEGIN; SELECT; then nothing
        health_serving(movie_db_url, tmp_path / "log", **env) as (port, _),
    ):
        forgotten.execute("SELECT 1")
        time.sleep(1.5)
        assert wait_for(
            lambda: (
                _metrics(port)[
                    f'moviectl_longest_transaction_seconds{{datname="{_db(movie_db_url)}"}}'
                ]
                >= 1
            ),
            10,
        )
        m = _metrics(port)
    db = _db(movie_db_url)
    assert m["moviectl_last_backup_timestamp_seconds"] == 0
    assert m["moviectl_last_verified_backup_timestamp_seconds"] == 0
    assert m[f'moviectl_connections{{datname="{db}",state="idle in transaction"}}'] >= 1
    assert m[f'moviectl_connections{{datname="{db}",state="idle in transaction (aborted)"}}'] == 0
    assert m[f'moviectl_database_up{{datname="{db}"}}'] == 1
    ups = {
        k: v for k, v in m.items() if k.startswith(("moviectl_check_up", "moviectl_database_up"))
    }
    assert ups and set(ups.values()) <= {0.0, 1.0}, ups


def test_mounted_the_pool_gauges_describe_the_apps_engine(movie_db_url):
    import asyncio

    from sqlalchemy import create_engine

    from moviectl.core.health.http import create_app
    from moviectl.infra.settings import load_settings

    settings = load_settings(use_dotenv=False, database_url=movie_db_url)
    engine = create_engine(
        "postgresql+psycopg://", connect_args=settings.target().libpq_params(5), pool_size=3
    )
    app = create_app(settings, engine=engine, deadline=10)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "headers": [], "path": "/metrics"}
    try:
        with engine.connect(), engine.connect():  # two of the app's connections in use
            asyncio.run(app(scope, receive, send))
    finally:
        engine.dispose()
    text = sent[1]["body"].decode()
    assert "moviectl_pool_size 3.0" in text and "moviectl_pool_checked_out 2.0" in text, text


PROMTOOL = Path("/usr/bin/promtool")
RULES = Path(__file__).resolve().parents[2] / "docs" / "prometheus-rules.yml"


def _promtool() -> str:
    import os
    import shutil

    found = shutil.which("promtool") or (str(PROMTOOL) if PROMTOOL.exists() else None)
    if found is None:
        if os.environ.get("MOVIECTL_REQUIRE_PROMTOOL") == "1":
            pytest.fail("promtool is required (MOVIECTL_REQUIRE_PROMTOOL=1) but not installed")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_promtool_accepts_the_alert_rules_and_their_unit_tests():
    promtool = _promtool()
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = Path(__file__).with_name("prometheus-rules.test.yml")
    tested = subprocess.run(
        [promtool, "test", "rules", tests.name], capture_output=True, text=True, cwd=tests.parent
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_a_real_metrics_body(movie_db_url, tmp_path):
    promtool = _promtool()
    with health_serving(movie_db_url, tmp_path / "log", MOVIE_PROBE_DEADLINE="5") as (port, _):
        resp, body = _get(port, "/metrics")
    assert resp.status == 200
    checked = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert checked.stdout.strip() == b"" and checked.stderr.strip() == b"", checked
