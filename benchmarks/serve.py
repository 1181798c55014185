"""`health --serve` under load against a bare uvicorn app answering a constant."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time

from benchmarks.common import MOVIECTL, load1, row
from moviectl.infra.ports import free_port

BARE_UVICORN = """
import socket, sys, uvicorn
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b'{"status": "ok"}'
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen(2048)
uvicorn.Server(uvicorn.Config(app, http="h11", log_config=None, access_log=False,
                              lifespan="off")).run(sockets=[sock])
"""


def _start_pair(
    env: dict[str, str], url: str, ours: int, bare: int
) -> list[subprocess.Popen[bytes]]:
    """`health --serve` on OURS (its database URL), bare uvicorn on BARE."""
    return [
        subprocess.Popen(
            [MOVIECTL, "health", "--serve", str(ours)],
            env={**env, "MOVIE_DATABASE_URL": url},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-c", BARE_UVICORN, str(bare)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]


def _wait_listening(*ports: int) -> None:
    for port in ports:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)


def _serve_load(port: int, path: str, clients: int, each: int) -> tuple[float, float, int]:
    """CLIENTS keep-alive clients x EACH GETs of PATH: (requests/s, p99 seconds, errors)."""
    import http.client
    import threading

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(each):
            t = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    errors[0] += 1
            except OSError:
                errors[0] += 1
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - started
    latencies.sort()
    return len(latencies) / wall, latencies[int(len(latencies) * 0.99) - 1], errors[0]


def bench_serve(env: dict[str, str], url: str, clients: int, each: int) -> None:
    """`health --serve`'s /readyz and /livez against a bare uvicorn app answering a constant,
    at CLIENTS and 5 x CLIENTS keep-alive clients (EACH requests per client at CLIENTS, the
    same total at 5x), the two servers alternated, medians of 3 rounds. The clients are
    Python threads in this process: both sides pay the same client cost."""
    since = load1()
    ours, bare = free_port(), free_port()
    procs = _start_pair(env, url, ours, bare)
    try:
        _wait_listening(ours, bare)
        _serve_load(ours, "/readyz", 2, 50)  # the first round of checks, out of the figures
        for n in (clients, 5 * clients):
            per = max(1, each * clients // n)
            for path in ("/readyz", "/livez"):
                m: dict[int, list[tuple[float, float, int]]] = {ours: [], bare: []}
                for _ in range(3):
                    for port in (ours, bare):
                        m[port].append(_serve_load(port, path, n, per))
                rps = statistics.median(r for r, _, _ in m[ours])
                p99 = statistics.median(p for _, p, _ in m[ours])
                brps = statistics.median(r for r, _, _ in m[bare])
                bp99 = statistics.median(p for _, p, _ in m[bare])
                errs = sum(e for _, _, e in m[ours])
                print(f"health --serve {path} {n}x{per}: {rps:,.0f} req/s (bare {brps:,.0f}), "
                      f"p99 {p99 * 1000:.1f} ms (bare {bp99 * 1000:.1f}), {errs} errors")  # fmt: skip  # noqa: E501
                if path == "/readyz":
                    row(f"--serve /readyz req/s, {n} clients, vs bare uvicorn", rps, brps, "req/s",
                        ">= 0.8x", rps >= 0.8 * brps and errs == 0, since)  # fmt: skip
                row(f"--serve {path} p99, {n} clients, vs bare uvicorn", p99 * 1000, bp99 * 1000,
                    "ms", "<= 2x", p99 <= 2 * bp99 and errs == 0, since)  # fmt: skip
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)


def bench_livez_hung(env: dict[str, str], clients: int, each: int) -> None:
    """`/livez` at CLIENTS x EACH while the database hangs (a listener that completes the TCP
    handshake and never answers, the probe's worst case) and `/readyz` is polled beside it:
    p99 against Kubernetes' default 1 s probe timeout and the issue's 50 ms, and against
    bare uvicorn under the same load."""
    import threading

    since = load1()
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(512)  # never accepted: connects succeed, reads wait
    port = hung.getsockname()[1]
    ours, bare = free_port(), free_port()
    url = f"postgresql://movie:secret@127.0.0.1:{port}/movies"
    procs = _start_pair(env, url, ours, bare)
    done = threading.Event()

    def scrape() -> None:  # an orchestrator's readiness probe, once a second
        import http.client

        while not done.wait(1):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", ours, timeout=5)
                conn.request("GET", "/readyz")
                conn.getresponse().read()
                conn.close()
            except OSError:
                pass

    try:
        _wait_listening(ours, bare)
        poller = threading.Thread(target=scrape, daemon=True)
        poller.start()
        p99s: dict[int, list[float]] = {ours: [], bare: []}
        errs = 0
        for _ in range(3):
            for p in (ours, bare):
                _, p99, e = _serve_load(p, "/livez", clients, each)
                p99s[p].append(p99)
                errs += e if p == ours else 0
        mine, theirs = statistics.median(p99s[ours]) * 1000, statistics.median(p99s[bare]) * 1000
        row(f"--serve /livez p99, db hung, {clients}x{each}, vs bare uvicorn", mine, theirs,
            "ms", "<= 50 ms", mine <= 50 and errs == 0, since)  # fmt: skip
    finally:
        done.set()
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=15)
        hung.close()
