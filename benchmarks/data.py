"""Moving data: `seed` against psql \\copy and the ORM, `backup` against bare pg_dump."""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

from benchmarks.common import (
    MOVIECTL,
    PG,
    Cmd,
    alternate,
    bytecode,
    libpq_env,
    load1,
    row,
    run,
    with_env,
)
from moviectl.infra.settings import Settings, load_settings


def bench_seed(url: str, env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    """`moviectl seed --sample N` (COPY, rows generated while a second thread sends) against
    `psql \\copy` of the same rows from a file, alternating on one database emptied between
    runs; the ORM session inserting 5,000 (in process) is the other peer."""
    import psycopg

    from moviectl.core.seed import load as seed
    from moviectl.core.seed.sample import sample_rows

    since = load1()
    e = {**env, "MOVIE_DATABASE_URL": url}
    data = tmp / "movies.tsv"
    with open(data, "w") as fh:
        for title, year, genre, rating in sample_rows(rows, 99):
            fh.write(f"{title}\t{year}\t{genre}\t{rating or chr(92) + 'N'}\n")

    def truncate(_: str = "") -> None:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("TRUNCATE movies, seed_runs")

    ours = [MOVIECTL, "seed", "--sample", str(rows)]
    copy = f"\\copy movies (title, year, genre, rating) FROM '{data}'"
    cmds: dict[str, Cmd] = {
        "ours": (ours, {}),
        "psql": ([str(PG / "psql"), "-X", "-c", copy], libpq_env(url)),
    }
    peaks: list[float] = []
    with bytecode(e, {"warm-up": ([MOVIECTL, "seed", "--sample", "1000"], {})}) as (warm, _):
        truncate()
        times: dict[str, list[float]] = {"ours": [], "psql": []}
        for _ in range(pairs):
            for name, (argv, extra) in cmds.items():
                took, mb = run(argv, {**warm, **extra})
                times[name].append(took)
                if name == "ours":
                    peaks.append(mb)
                truncate()
    s = load_settings(use_dotenv=False, database_url=url)
    orm_rows = min(5000, rows)
    t = time.perf_counter()
    seed.seed(s, sample=orm_rows, force_method="orm", random_seed=5)
    orm_rate = orm_rows / (time.perf_counter() - t)
    truncate()
    ours_rate = rows / statistics.median(times["ours"])
    peer_rate = rows / statistics.median(times["psql"])
    row(f"seed {rows:,}: rows/s vs psql \\copy", ours_rate, peer_rate, "rows/s", ">= 0.9x",
        ours_rate >= 0.9 * peer_rate, since)  # fmt: skip
    row(f"seed {rows:,}: rows/s vs ORM session", ours_rate, orm_rate, "rows/s", ">= 10x",
        ours_rate >= 10 * orm_rate, since)  # fmt: skip
    peak = max(peaks)
    row(f"seed {rows:,}: peak RSS of the process", peak, 200, "MB", "< 200 MB", peak < 200, since)


def bench_backup(settings: Settings, env: dict[str, str], rows: int, pairs: int, tmp: Path) -> None:
    """`moviectl backup` (custom format, its default compression; then `--compress gzip:6`,
    pg_dump's own default) against bare `pg_dump -Fc` of the same database, alternating,
    with the files' sizes. One database, seeded through `moviectl seed` (COPY): first
    min(1M, rows) movies (measured, info), then the rest with another random seed."""
    import json

    from moviectl.core import testdb

    since = load1()
    url = testdb.create(settings).full_url or ""
    e = {**env, "MOVIE_DATABASE_URL": url}
    small = min(1_000_000, rows)

    def seed(n: int, random_seed: int) -> None:
        took, _ = run([MOVIECTL, "seed", "--sample", str(n), "--random-seed", str(random_seed)], e)
        print(f"seeded {n:,} movies with moviectl seed in {took:.1f} s ({n / took:,.0f} rows/s)")

    out, bare = tmp / "bk", tmp / "bare.dump"
    out.mkdir()
    sizes: dict[str, list[int]] = {}
    chosen: set[str] = set()

    def size(p: Path) -> int:
        return sum(f.stat().st_size for f in p.rglob("*")) if p.is_dir() else p.stat().st_size

    def clean(name: str = "") -> None:  # a dump of 5M movies is ~200 MB: keep one at a time
        for p in [*out.iterdir(), bare]:
            if name and p.exists():
                if p.name.endswith(".manifest.json"):
                    chosen.add(f"{name}: {json.loads(p.read_text()).get('compression')}")
                else:
                    sizes.setdefault(name, []).append(size(p))
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    ours = [MOVIECTL, "backup", "--output", str(out)]
    cmds: dict[str, Cmd] = {
        "ours": (ours, {}),
        "bare": ([str(PG / "pg_dump"), "-Fc", "-f", str(bare)], libpq_env(url)),
        "gzip6": ([*ours, "--compress", "gzip:6"], {}),
        "startup": ([MOVIECTL, "backup", "--help"], {}),
        "dir": ([*ours, "--format", "directory", "--jobs", "2"], {}),
    }
    seed(small, 1895)
    with bytecode(e, {"ours": cmds["ours"], "startup": cmds["startup"]}) as (warm, _):
        clean()
        if small < rows:
            m = alternate(with_env({k: cmds[k] for k in ("ours", "bare")}, warm), pairs, clean)
            row(f"backup ({small:,} movies) vs bare pg_dump -Fc", m["ours"], m["bare"], "s",
                "info", True, since)  # fmt: skip
            since = load1()
            seed(rows - small, 1896)
            sizes.clear()
        m = alternate(with_env(cmds, warm), pairs, clean)
    print("compression chosen:", ", ".join(sorted(chosen)))
    mb = {k: statistics.median(v) / 1e6 for k, v in sizes.items()}
    row(f"backup ({rows:,} movies), default compression, vs bare pg_dump -Fc", m["ours"],
        m["bare"], "s", "<= 0.6x", m["ours"] <= 0.6 * m["bare"], since)  # fmt: skip
    row("  its file's size vs pg_dump -Fc's", mb["ours"], mb["bare"], "MB", "<= 1.25x",
        mb["ours"] <= 1.25 * mb["bare"], since)  # fmt: skip
    row("backup --compress gzip:6 vs bare pg_dump -Fc", m["gzip6"], m["bare"], "s", "<= 1.02x",
        m["gzip6"] <= 1.02 * m["bare"], since)  # fmt: skip
    row("  backup gzip:6 minus pg_dump vs backup --help", m["gzip6"] - m["bare"], m["startup"],
        "s", "info: vs start-up", True, since)  # fmt: skip
    row("  --format directory --jobs 2 vs -Fc (both default)", m["dir"], m["ours"], "s", "info",
        True, since)  # fmt: skip
    testdb.drop(settings, [url.rsplit("/", 1)[-1]])
