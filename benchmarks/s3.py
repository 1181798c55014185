"""Backups to object storage (issue 27): `backup --to s3://` against the floor, pg_dump piped
into the same library's multipart upload, and against dump-to-a-file-then-upload; `restore`
from the bucket against download-then-pg_restore. A real SeaweedFS (`weed mini`, the test
server) on 127.0.0.1; every command alternates with its peers on one seeded database.

The peers use the compression moviectl chooses for this pg_dump (the manifest says which),
so the comparison is of the transport alone. Throughput is printed beside the local disk's
sequential write speed (dd with fdatasync), the physical limit of a local copy here.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BIN, MOVIECTL, PG, bytecode, libpq_env, load1, row, run
from moviectl.core.backups.remote import MANIFEST
from moviectl.infra.settings import Settings

# the floor's uploader: stdin (or a file) into one multipart upload, as moviectl's S3
# repository does it (obstore.put from an iterator, 8 MiB parts, 4 in flight)
UPLOAD = """
import os, sys
import obstore
from obstore.store import S3Store
store = S3Store(os.environ["BENCH_BUCKET"], endpoint=os.environ["AWS_ENDPOINT_URL"],
                client_options={"allow_http": True})
src = open(sys.argv[2], "rb") if len(sys.argv) > 2 else sys.stdin.buffer
obstore.put(store, sys.argv[1], iter(lambda: src.read(1 << 20), b""),
            chunk_size=8 << 20, max_concurrency=4)
"""
DOWNLOAD = """
import os, sys
import obstore
from obstore.store import S3Store
store = S3Store(os.environ["BENCH_BUCKET"], endpoint=os.environ["AWS_ENDPOINT_URL"],
                client_options={"allow_http": True})
with open(sys.argv[2], "wb") as out:
    for chunk in obstore.get(store, sys.argv[1]).stream(min_chunk_size=1 << 20):
        out.write(chunk)
"""


def disk_write_mb_s(where: Path, mb: int = 256) -> float:
    """Sequential write speed of ``where``'s disk, flushed (dd conv=fdatasync)."""
    target = where / "dd.bin"
    t = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={mb}", "conv=fdatasync"],
        check=True,
        capture_output=True,
    )
    took = time.perf_counter() - t
    target.unlink()
    return mb / took


def bench_s3(settings: Settings, env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:

    from moviectl.core import testdb
    from tests.core.s3server import SeaweedS3

    since = load1()
    server = SeaweedS3(tmp / "seaweed")
    server.start()
    url = testdb.create(settings).full_url or ""
    try:
        warm_up = {"ours": ([MOVIECTL, "backup", "--help"], {})}
        with bytecode(env, warm_up) as (warm, _):  # moviectl's bytecode cached, as installed
            _measure(warm, server, url, rows, pairs, tmp, since)
    finally:
        testdb.drop(settings, [url.rsplit("/", 1)[-1]])
        server.stop()


def _measure(
    env: dict[str, str], server: Any, url: str, rows: int, pairs: int, tmp: Path, since: float
) -> None:
    import psycopg

    s3env = {**env, **server.env(), "BENCH_BUCKET": server.bucket}
    e = {**s3env, "MOVIE_DATABASE_URL": url, "MOVIE_BACKUP_DIR": str(tmp / "staging")}
    t = time.perf_counter()
    run([MOVIECTL, "seed", "--sample", str(rows), "--random-seed", "1895"], e)
    print(f"seeded {rows:,} movies in {time.perf_counter() - t:.1f} s")
    # one untimed backup: warms the bytecode and learns the compression moviectl picks
    r = subprocess.run(
        [MOVIECTL, "--json", "backup", "--to", "s3://backups/warm"],
        env=e, capture_output=True, text=True, check=True,
    )  # fmt: skip
    first = json.loads(r.stdout)
    comp = first["manifest"]["compression"]
    size_mb = first["manifest"]["size_bytes"] / 1e6
    print(f"compression chosen: {comp}; the dump is {size_mb:,.1f} MB")
    py = str(BIN / "python")
    dump = f"{PG / 'pg_dump'} -Fc -Z {comp}"
    local = tmp / "local.dump"
    pg = libpq_env(url)
    n = [0]

    def key() -> str:
        n[0] += 1
        return f"bench/{n[0]}.dump"

    times: dict[str, list[float]] = {"ours": [], "floor": [], "two-step": []}
    peaks: list[float] = []
    for _ in range(pairs):
        took, mb = run([MOVIECTL, "backup", "--to", "s3://backups/ours"], e)
        times["ours"].append(took)
        peaks.append(mb)
        pipe = f"{dump} | {py} -c '{UPLOAD}' {key()}"
        times["floor"].append(run(["bash", "-o", "pipefail", "-c", pipe], {**s3env, **pg})[0])
        steps = f"{dump} -f {local} && {py} -c '{UPLOAD}' {key()} {local} && rm {local}"
        times["two-step"].append(run(["bash", "-c", steps], {**s3env, **pg})[0])
    m = {k: statistics.median(v) for k, v in times.items()}
    row(f"backup --to s3 ({rows:,} movies) vs pg_dump | multipart upload", m["ours"],
        m["floor"], "s", "<= 1.05x", m["ours"] <= 1.05 * m["floor"], since)  # fmt: skip
    row("  backup --to s3 vs pg_dump to a file, then upload", m["ours"], m["two-step"], "s",
        "< 1.0x", m["ours"] < m["two-step"], since)  # fmt: skip
    # where the gap is: wall time outside pg_dump's own run (start-up, the snapshot's login,
    # the manifest and exit), from each run's manifest; the floor's pg_dump starts at once
    dumped = [
        json.loads(server.read(k))["dump_seconds"]
        for k in server.keys("ours/")
        if k.endswith(MANIFEST)
    ]
    outside = statistics.median(w - d for w, d in zip(times["ours"], dumped, strict=True))
    row("  backup --to s3: seconds outside pg_dump's run vs the gap to the floor", outside,
        m["ours"] - m["floor"], "s", "info: start-up and the snapshot", True, since)  # fmt: skip
    peak = max(peaks)
    row(f"  backup --to s3 ({rows:,}): peak RSS of moviectl", peak, 150, "MB", "<= 150 MB",
        peak <= 150, since)  # fmt: skip
    disk = disk_write_mb_s(tmp)
    row("  backup --to s3 throughput vs local disk write", size_mb / m["ours"], disk,
        "MB/s", "info: the disk is the local copy's limit", True, since)  # fmt: skip

    since = load1()
    name = first["path"]
    obj = name.split("s3://backups/", 1)[1]
    admin = psycopg.connect(url, autocommit=True)
    rtimes: dict[str, list[float]] = {"ours": [], "peer": []}
    for i in range(pairs):
        db = f"bench_restore_{i}"
        rtimes["ours"].append(run([MOVIECTL, "restore", name, "--into", db, "--yes"], e)[0])
        admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
        peer = (
            f"{py} -c '{DOWNLOAD}' {obj} {local} && "
            f"{PG / 'createdb'} {db} && "  # moviectl's run creates its database too
            f"{PG / 'pg_restore'} --no-owner -d {db} {local} && rm {local}"
        )
        rtimes["peer"].append(run(["bash", "-c", peer], {**s3env, **pg})[0])
        admin.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
    admin.close()
    m = {k: statistics.median(v) for k, v in rtimes.items()}
    row(f"restore from s3 ({rows:,} movies) vs download, then pg_restore", m["ours"],
        m["peer"], "s", "<= 1.0x", m["ours"] <= m["peer"], since)  # fmt: skip
