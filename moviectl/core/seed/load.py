"""`moviectl seed`: deterministic sample movies, or rows from a CSV/JSON file.

Small loads go through ``MovieRepository``; large ones stream through psycopg's
``COPY`` in one transaction, in chunks, so memory stays flat. Every run is
recorded in the ``seed_runs`` ledger; the same seed set is not inserted twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moviectl.core.seed.copy_stream import FINISH_RUN, Progress, copy_line, copy_rows
from moviectl.core.seed.files import file_rows, file_sha256, validate_file
from moviectl.core.seed.sample import DEFAULT_SEED, sample_lines, sample_rows
from moviectl.infra.engine import connect, db_errors, make_engine, translate_error
from moviectl.infra.errors import MigrationsBehind, MoviectlError, UsageError
from moviectl.infra.settings import DbTarget, Settings

COPY_THRESHOLD = 1000  # rows: above this, COPY; at or below, the repository


@dataclass
class SeedResult:
    run_id: int | None
    status: str  # done | already seeded
    source: str  # sample | file
    key: str
    requested: int
    inserted: int
    method: str  # orm | copy | none
    random_seed: int | None
    file: str | None
    sha256: str | None
    seconds: float
    rows_per_second: float | None
    started_at: datetime | None = None
    finished_at: datetime | None = None


# ---- running a seed ------------------------------------------------------------------------
def _check_head(settings: Settings, target: DbTarget) -> None:
    from moviectl.core.migrations.scripts import head_revision

    head = head_revision()
    with connect(target, connect_timeout=settings.connect_timeout) as c:
        has = c.execute("SELECT to_regclass('alembic_version')").fetchone()
        row = (
            c.execute("SELECT version_num FROM alembic_version").fetchone()
            if has and has[0]
            else None
        )
    current = row[0] if row else None
    if current != head:
        raise MigrationsBehind(
            f"database {target.database} is at {current or 'base (no schema)'}, "
            f"the code at {head}: refusing to seed",
            hint="run `moviectl migrate` first",
        )


def reset(settings: Settings, target: DbTarget | None = None) -> None:
    """Empty the movie tables and the ledger (callers confirm first)."""
    t = target or settings.target()
    _check_head(settings, t)
    with connect(t, connect_timeout=settings.connect_timeout) as c:
        c.execute("TRUNCATE movies, seed_runs RESTART IDENTITY")


def seed(
    settings: Settings,
    *,
    sample: int | None = None,
    path: Path | None = None,
    random_seed: int = DEFAULT_SEED,
    again: bool = False,
    target: DbTarget | None = None,
    progress: Progress | None = None,
    force_method: str | None = None,
) -> SeedResult:
    if (sample is None) == (path is None):
        raise UsageError("give --sample N or --from FILE (one of them)")
    if sample is not None and sample < 1:
        raise UsageError(f"--sample must be a positive number, not {sample}")
    t = target or settings.target()
    started = time.monotonic()
    if path is not None:
        total = validate_file(path)
        digest = file_sha256(path)
        key, source, seed_value = f"file:{digest}", "file", None
        rows: Iterator[Any] = file_rows(path)
    else:
        assert sample is not None
        total, digest, source, seed_value = sample, None, "sample", random_seed
        key = f"sample:{sample}:{random_seed}"
        rows = sample_rows(sample, random_seed)
    _check_head(settings, t)
    method = force_method or ("copy" if total > COPY_THRESHOLD else "orm")
    if method == "copy":
        rows = sample_lines(total, random_seed) if path is None else map(copy_line, rows)
    with connect(t, connect_timeout=settings.connect_timeout) as c:
        done = c.execute(
            "SELECT id, started_at, finished_at FROM seed_runs WHERE key = %s AND status = 'done' "
            "ORDER BY id DESC LIMIT 1",
            (key,),
        ).fetchone()
        if done and not again:
            return SeedResult(
                done[0],
                "already seeded",
                source,
                key,
                total,
                0,
                "none",
                seed_value,
                str(path) if path else None,
                digest,
                0.0,
                None,
                done[1],
                done[2],
            )
        run_id = c.execute(
            "INSERT INTO seed_runs (key, source, file_name, sha256, requested, random_seed, "
            "method, status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'running') RETURNING id",
            (key, source, str(path) if path else None, digest, total, seed_value, method),
        ).fetchone()[0]  # type: ignore[index]
    try:
        inserted = (copy_rows if method == "copy" else _orm)(
            settings, t, rows, total, run_id, progress
        )
    except BaseException as exc:
        _mark_failed(settings, t, run_id, exc)
        if isinstance(exc, MoviectlError):
            raise
        if isinstance(exc, Exception):
            raise translate_error(exc, t) from None
        raise
    seconds = time.monotonic() - started
    with connect(t, connect_timeout=settings.connect_timeout) as c:
        times = c.execute(
            "SELECT started_at, finished_at FROM seed_runs WHERE id = %s", (run_id,)
        ).fetchone()
    return SeedResult(
        run_id,
        "done",
        source,
        key,
        total,
        inserted,
        method,
        seed_value,
        str(path) if path else None,
        digest,
        round(seconds, 3),
        round(inserted / seconds, 1) if seconds else None,
        times[0] if times else None,
        times[1] if times else None,
    )


def _orm(
    settings: Settings,
    t: DbTarget,
    rows: Iterator[Any],
    total: int,
    run_id: int,
    progress: Progress | None,
) -> int:
    """Insert through the repository (one transaction, with the ledger update)."""
    from sqlalchemy import text

    from moviectl.infra.engine import session_scope
    from moviectl.infra.repository import MovieRepository

    engine = make_engine(settings, target=t, pooled=False)
    done = 0
    try:
        with db_errors(t), session_scope(engine) as session:
            repo = MovieRepository(session)
            for title, year, genre, rating in rows:
                repo.create({"title": title, "year": year, "genre": genre, "rating": rating})
                done += 1
                if progress and done % 100 == 0:
                    progress(done, total)
            session.execute(
                text(FINISH_RUN.replace("%(n)s", ":n").replace("%(id)s", ":id")),
                {"n": done, "id": run_id},
            )
    finally:
        engine.dispose()
    if progress:
        progress(done, total)
    return done


def _mark_failed(settings: Settings, t: DbTarget, run_id: int, exc: BaseException) -> None:
    try:
        with connect(t, connect_timeout=settings.connect_timeout) as c:
            c.execute(
                "UPDATE seed_runs SET status = 'failed', error = %s, "
                "finished_at = clock_timestamp() WHERE id = %s",
                (str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__, run_id),
            )
    except MoviectlError:
        pass  # the server is gone; the ledger row stays 'running' (see `seed_runs`)


def seed_sample_into(settings: Settings, url: str, n: int) -> SeedResult:
    from moviectl.infra.settings import parse_db_url

    return seed(settings, sample=n, target=parse_db_url(url))
