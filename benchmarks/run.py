"""Every performance goal from the issues, measured against its peer in one run.

    uv run python benchmarks/run.py                          # the whole table (~40 min)
    uv run python benchmarks/run.py --only backup --backup-rows 1000000
    uv run python benchmarks/run.py --only live,health,help
    uv run python benchmarks/run.py --only s3 --s3-rows 5000000   # backup --to s3:// (issue 27)
    uv run python benchmarks/run.py --only inspect --rounds 5
    uv run python benchmarks/run.py --only replay --replay-mb 256   # PITR WAL replay (issue 28)
    uv run python benchmarks/run.py --only physical   # backup --physical vs pg_basebackup (28)
    uv run python benchmarks/run.py --only pool   # the test pool and tier 1 vs a hand conftest (32)

Starts its own embedded PostgreSQL in a temp directory (test-cluster settings: fsync,
synchronous_commit and full_page_writes off, the same server for moviectl and its peers)
and prints one table: figure, moviectl, peer or limit, ratio, goal and verdict, and the
1-minute load average while the figure was measured. Method (issue 32): every ratio is the
median of moviectl's runs over the median of its peer's, the runs alternating (A B A B ...)
so a busy spell of this shared machine hits both alike. moviectl is driven as people run
it, through its console script in a subprocess. Bytecode: "warm" runs use a private
PYTHONPYCACHEPREFIX filled by one untimed run of each command; "no bytecode cache" runs use
PYTHONDONTWRITEBYTECODE=1 and a fresh, empty PYTHONPYCACHEPREFIX (checked still empty
afterwards), so every module not frozen into the interpreter is compiled on every run.
Absolute times on shared machines are noise; the ratios are the point.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common
from benchmarks.common import HEADER
from benchmarks.data import bench_backup, bench_seed
from benchmarks.inspecting import bench_inspect
from benchmarks.pitr import bench_physical, bench_replay
from benchmarks.pool import bench_pool
from benchmarks.s3 import bench_s3
from benchmarks.serve import bench_livez_hung, bench_serve
from benchmarks.startup import bench_health, bench_help, bench_live, bench_status
from benchmarks.testdb import bench_testdb, bench_tiers
from benchmarks.upgrade import bench_upgrade
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.ports import free_port
from moviectl.infra.settings import load_settings

NAMES = (
    "live",
    "health",
    "help",
    "status",
    "inspect",
    "serve",
    "testdb",
    "tiers",
    "pool",
    "seed",
    "backup",
    "upgrade",
    "s3",
    "replay",
    "physical",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", default=",".join(NAMES), help=f"comma list of: {', '.join(NAMES)}")
    ap.add_argument("--rows", type=int, default=1_000_000, help="seed row's size")
    ap.add_argument("--seed-pairs", type=int, default=3)
    ap.add_argument("--backup-rows", type=int, default=5_000_000)
    ap.add_argument("--backup-pairs", type=int, default=5)
    ap.add_argument("--s3-rows", type=int, default=1_000_000, help="backup --to s3's size")
    ap.add_argument("--s3-pairs", type=int, default=3)
    ap.add_argument("--replay-mb", type=int, default=256, help="WAL the replay figure replays")
    ap.add_argument("--replay-pairs", type=int, default=3)
    ap.add_argument("--pool-rounds", type=int, default=2, help="pool: whole runs of each side")
    ap.add_argument("--physical-rows", type=int, default=1_000_000, help="backup --physical's")
    ap.add_argument("--physical-pairs", type=int, default=5)
    ap.add_argument("--upgrade-rows", type=int, default=1_000_000)
    ap.add_argument("--upgrade-pairs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=11, help="start-up rounds (--live: 4x)")
    ap.add_argument("--serve-clients", type=int, default=20)
    ap.add_argument("--serve-requests", type=int, default=2000, help="per client")
    args = ap.parse_args()
    only = args.only.split(",")
    if unknown := set(only) - set(NAMES):
        ap.error(f"unknown --only {', '.join(sorted(unknown))}; known: {', '.join(NAMES)}")
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load {os.getloadavg()}")
    tmp = Path(tempfile.mkdtemp(prefix="moviectl-bench-"))
    server = EmbeddedServer(
        tmp / "pg", free_port(), "postgres", secrets.token_hex(8), options=TEST_OPTIONS
    )
    server.start()
    try:
        admin_url = f"postgresql://postgres:{server.password}@127.0.0.1:{server.port}/postgres"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOVIE_", "PG"))}
        env["MOVIE_DATABASE_URL_TEST"] = admin_url
        settings = load_settings(use_dotenv=False, database_url_test=admin_url)
        from moviectl.core import testdb

        url = testdb.create(settings).full_url or ""  # migrated, empty
        for name in NAMES:
            if name not in only:
                continue
            if name == "live":
                bench_live({**env, "MOVIE_DATABASE_URL": url}, server.port, 4 * args.rounds)
            elif name == "health":
                bench_health(env, url, args.rounds)
            elif name == "help":
                bench_help(env, args.rounds)
            elif name == "status":
                bench_status(env, url, args.rounds)
            elif name == "inspect":
                bench_inspect(env, tmp, args.rounds)
            elif name == "serve":
                bench_serve(env, url, args.serve_clients, args.serve_requests)
                bench_livez_hung(env, args.serve_clients, 1000)
            elif name == "testdb":
                bench_testdb(settings, admin_url, env)
            elif name == "tiers":
                bench_tiers(admin_url, env, tmp)
            elif name == "pool":
                bench_pool(admin_url, env, tmp, args.pool_rounds)
            elif name == "seed":
                bench_seed(url, env, args.rows, args.seed_pairs, tmp)
            elif name == "backup":
                bench_backup(settings, env, args.backup_rows, args.backup_pairs, tmp)
            elif name == "s3":
                bench_s3(settings, env, args.s3_rows, args.s3_pairs, tmp)
            elif name == "replay":
                bench_replay(env, args.replay_mb, args.replay_pairs, tmp)
            elif name == "physical":
                bench_physical(env, args.physical_rows, args.physical_pairs, tmp)
            elif name == "upgrade":
                bench_upgrade(env, args.upgrade_rows, args.upgrade_pairs, tmp)
    finally:
        server.stop("immediate")
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload at the end {os.getloadavg()}")
    widths = [max(len(r[i]) for r in [HEADER, *common.ROWS]) for i in range(len(HEADER))]
    for r in [HEADER, *common.ROWS]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
