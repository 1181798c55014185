"""`moviectl seed`: deterministic sample movies, or rows from a CSV/JSON file.

Small loads go through ``MovieRepository``; large ones stream through psycopg's
``COPY`` in one transaction, in chunks, so memory stays flat. Every run is
recorded in the ``seed_runs`` ledger; the same seed set is not inserted twice.
Every session waits for a table lock at most MOVIE_STALL_TIMEOUT (``lock_timeout``):
behind a transaction that holds ``movies`` the run fails (exit 7, naming the holder),
marked failed in the ledger, nothing inserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moviectl.core.seed import ledger
from moviectl.core.seed.copy_stream import Progress, copy_line, copy_rows
from moviectl.core.seed.files import file_rows, file_sha256, validate_file
from moviectl.core.seed.sample import DEFAULT_SEED, sample_lines, sample_rows
from moviectl.infra.engine import connect, make_engine, require_session
from moviectl.infra.errors import (
    InputFileError,
    LockBusy,
    MigrationsBehind,
    MoviectlError,
    UsageError,
)
from moviectl.infra.pgerrors import classify, driver_cause, is_lock_timeout, sqlstate
from moviectl.infra.settings import DbTarget, Settings
from moviectl.infra.watchdog import StallWatch

COPY_THRESHOLD = 1000  # rows: above this, COPY; at or below, the repository
SEED_SET_WAIT = 600.0  # seconds a run waits for another run of the same set
DATA_CLASSES = ("22", "23")  # SQLSTATE classes: data exception, integrity constraint violation
# the table locks that keep an INSERT or UPDATE (ROW EXCLUSIVE) waiting
WRITE_BLOCKERS = ["ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"]


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
    from moviectl.infra.server_facts import alembic_revision

    head = head_revision()
    with connect(target, connect_timeout=settings.connect_timeout) as c:
        bound_locks(c, settings)
        current = alembic_revision(c)
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
        bound_locks(c, settings)
        try:
            c.execute("TRUNCATE movies, seed_runs RESTART IDENTITY")
        except Exception as exc:
            if is_lock_timeout(exc):  # TRUNCATE's ACCESS EXCLUSIVE conflicts with any lock
                raise lock_busy(c, t, settings, "reset", ["AccessShareLock", *ALL_LOCKS]) from None
            raise


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
    if target is None:  # the seed set's lock and the run's are session locks: direct
        settings = require_session(settings, "seed")
    t = target or settings.target()
    _check_head(settings, t)
    method = force_method or ("copy" if total > COPY_THRESHOLD else "orm")
    if method == "copy":
        rows = sample_lines(total, random_seed) if path is None else map(copy_line, rows)
    file_name = str(path) if path else None
    # The holder session keeps the seed set's lock and the run's lock for the whole run.
    with connect(t, connect_timeout=settings.connect_timeout, session="seed") as holder:
        ledger.hold_seed_set(holder, key, SEED_SET_WAIT)
        bound_locks(holder, settings)  # the ledger's own table, behind someone's lock
        try:
            ledger.abandon_dead_runs(holder)  # after the lock: a killed run of this set is gone
        except Exception as exc:
            if is_lock_timeout(exc):
                raise lock_busy(holder, t, settings, "seed", WRITE_BLOCKERS) from None
            raise
        done = ledger.last_done(holder, key)
        if done and not again:
            return SeedResult(
                run_id=done[0],
                status="already seeded",
                source=source,
                key=key,
                requested=total,
                inserted=0,
                method="none",
                random_seed=seed_value,
                file=file_name,
                sha256=digest,
                seconds=0.0,
                rows_per_second=None,
                started_at=done[1],
                finished_at=done[2],
            )
        run_id = ledger.start_run(
            holder,
            key=key,
            source=source,
            file_name=file_name,
            sha256=digest,
            requested=total,
            random_seed=seed_value,
            method=method,
        )
        if method == "orm":  # the rate measures inserts, not importing the ORM
            _load_orm()
        load_started = time.monotonic()
        watch = StallWatch.for_settings(settings, t, "the seed")
        done_so_far = [0]

        def tracked(done: int, of: int) -> None:
            done_so_far[0] = done
            if progress:
                progress(done, of)

        watch.track(lambda: done_so_far[0])
        watch.watch_connection(holder)
        try:
            insert = copy_rows if method == "copy" else _orm
            with watch:
                inserted = insert(settings, t, rows, total, run_id, tracked, watch)
        except BaseException as exc:
            ledger.mark_failed(holder, run_id, exc)
            if isinstance(exc, Exception) and is_lock_timeout(exc):
                raise lock_busy(holder, t, settings, "seed", WRITE_BLOCKERS) from None
            expected = _expected(exc, t, path) if isinstance(exc, Exception) else None
            if expected is None:
                raise  # a bug (or Ctrl-C): the one handler says so, exit 10 with -v
            raise expected from None
        seconds = time.monotonic() - load_started
        started_at, finished_at = ledger.run_times(holder, run_id)
    return SeedResult(
        run_id=run_id,
        status="done",
        source=source,
        key=key,
        requested=total,
        inserted=inserted,
        method=method,
        random_seed=seed_value,
        file=file_name,
        sha256=digest,
        seconds=round(seconds, 3),
        rows_per_second=round(inserted / seconds, 1) if seconds else None,
        started_at=started_at,
        finished_at=finished_at,
    )


ALL_LOCKS = ["RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock", *WRITE_BLOCKERS]


def bound_locks(conn: Any, settings: Settings) -> None:
    """No statement of this session waits for a lock longer than MOVIE_STALL_TIMEOUT."""
    from moviectl.core.migrations.timeouts import to_ms

    conn.execute(f"SET lock_timeout = {to_ms(settings.stall_timeout)}")  # an int


def lock_busy(conn: Any, t: DbTarget, settings: Settings, what: str, modes: list[str]) -> LockBusy:
    """``what`` gave up on a table lock: who holds one of ``modes`` (asked on ``conn``)."""
    from moviectl.core.migrations.timeouts import stall_lock_busy

    left = "nothing was inserted or changed"
    return stall_lock_busy(conn, what, t, settings, modes, left, "run it again")


def _expected(exc: Exception, t: DbTarget, path: Path | None) -> MoviectlError | None:
    """The user error ``exc`` is, if it is one: moviectl's own, an expected driver error
    (``pgerrors``), or a bad input file: a row the database refuses (a constraint the file
    check does not know) or a file changed since it was checked. Anything else is a bug."""
    if isinstance(exc, MoviectlError):
        return exc
    known = classify(exc, t)
    if known is not None:
        return known
    if path is None:
        return None
    code = sqlstate(exc) or ""
    if code[:2] in DATA_CLASSES:
        cause = driver_cause(exc) or exc
        first = (str(cause).strip().splitlines() or [code])[0]
        return InputFileError(
            f"{path}: the database refused a row ({first}; SQLSTATE {code})",
            hint="nothing was inserted; fix the file and run again",
        )
    from pydantic import ValidationError  # loaded already: the file was checked with it

    if isinstance(exc, ValidationError):
        return InputFileError(
            f"{path} changed while it was loaded: {exc.errors()[0]['msg']}",
            hint="nothing was inserted; run again once nothing writes the file",
        )
    return None


def _load_orm() -> None:
    """Import the ORM path's modules (SQLAlchemy, SQLModel, the models): only it needs them."""
    import sqlalchemy  # noqa: F401

    import moviectl.infra.repository  # noqa: F401


def _orm(
    settings: Settings,
    t: DbTarget,
    rows: Iterator[Any],
    total: int,
    run_id: int,
    progress: Progress | None,
    watch: StallWatch | None = None,
) -> int:
    """Insert through the repository (one transaction, with the ledger update)."""
    from sqlalchemy import text

    from moviectl.core.migrations.timeouts import to_ms
    from moviectl.infra.engine import session_scope
    from moviectl.infra.repository import MovieRepository

    engine = make_engine(settings, target=t, pooled=False)
    done = 0
    try:  # driver errors go on to `seed`, which says what they mean (a lock timeout: who)
        with session_scope(engine) as session:
            session.execute(text(f"SET lock_timeout = {to_ms(settings.stall_timeout)}"))
            repo = MovieRepository(session)
            if watch is not None:
                watch.watch_connection(session.connection().connection.dbapi_connection)
            for title, year, genre, rating in rows:
                repo.create({"title": title, "year": year, "genre": genre, "rating": rating})
                done += 1
                if progress and done % 100 == 0:
                    progress(done, total)
            session.execute(
                text(ledger.FINISH_RUN.replace("%(n)s", ":n").replace("%(id)s", ":id")),
                {"n": done, "id": run_id},
            )
    finally:
        engine.dispose()
    if progress:
        progress(done, total)
    return done


def seed_sample_into(settings: Settings, url: str, n: int) -> SeedResult:
    from moviectl.infra.settings import parse_db_url

    return seed(settings, sample=n, target=parse_db_url(url))
