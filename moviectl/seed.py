"""`moviectl seed`: deterministic sample movies, or rows from a CSV/JSON file.

Small loads go through ``MovieRepository``; large ones stream through psycopg's
``COPY`` in one transaction, in chunks, so memory stays flat. Every run is
recorded in the ``seed_runs`` ledger; the same seed set is not inserted twice.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from moviectl.catalog import GENRES
from moviectl.engine import connect, db_errors, make_engine, translate_error
from moviectl.errors import InputFileError, MigrationsBehind, MoviectlError, UsageError
from moviectl.settings import DbTarget, Settings

COPY_THRESHOLD = 1000  # rows: above this, COPY; at or below, the repository
CHUNK = 20000
QUEUE_CHUNKS = 4  # chunks in flight between generating and sending
DEFAULT_SEED = 1895  # the Lumière brothers' first screening
COLUMNS = ("title", "year", "genre", "rating")
Progress = Callable[[int, int], None]  # (done, total)


def _unique(words: str, underscore_as: str = "_") -> tuple[str, ...]:
    """Distinct words in order (a repeated word would repeat titles)."""
    return tuple(dict.fromkeys(w.replace("_", underscore_as) for w in words.split()))


_ADJ = _unique(
    "Silent Crimson Hidden Broken Golden Last Burning Frozen Midnight Savage Distant Hollow "
    "Wicked Electric Forgotten Endless Scarlet Secret Lonely Wild Dark Bright Quiet Restless "
    "Shattered Velvet Iron Glass Paper Northern Southern Eastern Western Lost Fallen Rising "
    "Sleeping Bitter Sweet Stolen Haunted Final First Second Little Great Crooked Gentle "
    "Invisible Reckless Wandering Painted Copper Silver Emerald Violet Black White Blue Grey "
    "Burning Howling Drowned Sunken Shining Faded Furious Tender Brave Cursed Blessed Ancient "
    "Modern Empty Perfect Strange Secondhand Borrowed Desperate Dangerous Curious"
)
_NOUN = _unique(
    "Harbor River Empire Garden Witness Stranger Kingdom Letter Promise Mirror Shadow Horizon "
    "Station Summer Winter Orchard Lighthouse Carnival Frontier Circuit Signal Verdict "
    "Covenant Machine Hotel Voyage Detective Widow Soldier Dancer Thief Pilgrim Tide Storm "
    "Fortune Alibi Ballad Canyon Citadel Compass Corridor Desert Diary Echo Engine Festival "
    "Fugitive Gambit Glacier Heist Island Jungle Labyrinth Legacy Meridian Monsoon Nocturne "
    "Outpost Paradox Prophecy Quarry Requiem Rhapsody Sanctuary Serenade Sonata Spiral "
    "Syndicate Tempest Testament Threshold Tower Tunnel Uprising Vendetta Vigil Wager"
)
_PLACE = _unique(
    "Vienna Lisbon Tangier Havana Marseille Kyoto Lagos Oslo Palermo Odessa Montreal Quito "
    "Dakar Prague Memphis Reno Tucson Galway Bergen Tbilisi Valparaiso Macau Casablanca "
    "Istanbul Budapest Naples Seville Trieste Krakow Riga Hamburg Antwerp Bristol Glasgow "
    "Cairo Zanzibar Bombay Manila Saigon Shanghai Sapporo Hobart Perth Juneau Sedona Santa_Fe "
    "Dover Calais",
    underscore_as=" ",
)
_PATTERNS = (
    "The {a} {n} of {p}", "{p}: The {a} {n}", "A {a} {n} in {p}", "{a} {n} Over {p}",
    "The {n} from {p} Was {a}", "Return of the {a} {n} to {p}", "{p} {a} {n}",
    "Nights of the {a} {n} in {p}", "The {a} {n}: A {p} Story", "Beyond the {a} {n} of {p}",
)  # fmt: skip
_SPACE = len(_PATTERNS) * len(_ADJ) * len(_NOUN) * len(_PLACE)


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


def _roman(n: int) -> str:
    out = ""
    numerals = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"),
                (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"),
                (1, "I"))  # fmt: skip
    for value, sym in numerals:
        while n >= value:
            out += sym
            n -= value
    return out


def sample_rows(n: int, seed: int = DEFAULT_SEED) -> Iterator[tuple[str, int, str, str | None]]:
    """N plausible movies; the same (n, seed) always gives the same rows, titles all distinct.

    Titles come from a seeded bijection of [0, space): index i picks a pattern and
    words by mixed radix; past the space, sequels get a Roman numeral.
    """
    rng = random.Random(seed)
    step = rng.randrange(1, _SPACE)
    while _gcd(step, _SPACE) != 1:
        step += 1
    offset = rng.randrange(_SPACE)
    la, ln, lp = len(_ADJ), len(_NOUN), len(_PLACE)
    genres, nog = GENRES, len(GENRES)
    for i in range(n):
        k = (offset + i * step) % _SPACE
        k, a = divmod(k, la)
        k, w = divmod(k, ln)
        pat, p = divmod(k, lp)
        title = _PATTERNS[pat].format(a=_ADJ[a], n=_NOUN[w], p=_PLACE[p])
        if i >= _SPACE:
            title += f" {_roman(i // _SPACE + 1)}"
        year = 2025 - int(rng.expovariate(1 / 22)) % 130
        genre = genres[int(rng.random() * nog)]
        r = rng.random()
        rating = None if r < 0.05 else f"{min(9.8, max(1.0, rng.gauss(6.4, 1.3))):.1f}"
        yield title, year, genre, rating


def sample_lines(n: int, seed: int = DEFAULT_SEED) -> Iterator[str]:
    """``sample_rows`` as COPY text lines (the words need no escaping)."""
    null = "\\N"
    for title, year, genre, rating in sample_rows(n, seed):
        yield f"{title}\t{year}\t{genre}\t{rating or null}\n"


def _copy_line(row: tuple[str, int, str, str | None]) -> str:
    title, year, genre, rating = row
    shown = "\\N" if rating is None else rating
    return f"{_esc(title)}\t{year}\t{_esc(genre)}\t{shown}\n"


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


# ---- files ---------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for a CSV or JSON file; streams CSV."""
    try:
        if path.suffix.lower() in (".json", ".jsonl", ".ndjson"):
            text = path.read_text(encoding="utf-8")
            if path.suffix.lower() != ".json":
                for no, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        yield no, json.loads(line)
                return
            data = json.loads(text)
            if not isinstance(data, list):
                raise InputFileError(f"{path}: expected a JSON array of movies")
            for no, rec in enumerate(data, 1):
                if not isinstance(rec, dict):
                    raise InputFileError(f"{path}: item {no} is not an object")
                yield no, rec
            return
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("title", "year", "genre") if c not in (reader.fieldnames or [])]
            if reader.fieldnames is None:
                raise InputFileError(
                    f"{path} is empty", hint="expected columns: title,year,genre,rating"
                )
            if missing:
                raise InputFileError(
                    f"{path}: missing column(s) {', '.join(missing)}",
                    hint=f"the header has: {', '.join(reader.fieldnames)}; "
                    "expected title,year,genre,rating",
                )
            for rec in reader:
                yield reader.line_num, {k: (v if v != "" else None) for k, v in rec.items()}
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path} is not valid UTF-8 (byte {exc.start}): {exc.reason}",
            hint="re-encode the file as UTF-8",
        ) from None
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


def validate_file(path: Path) -> int:
    """Validate every row (SQLModel's MovieCreate); the count, or an error naming the line."""
    from pydantic import ValidationError

    from moviectl.models import MovieCreate

    if not path.is_file():
        raise InputFileError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path} is empty", hint="expected columns: title,year,genre,rating")
    count = 0
    for no, rec in _file_records(path):
        try:
            MovieCreate.model_validate({k: rec.get(k) for k in COLUMNS})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            raise InputFileError(
                f"{path}, line {no}: {field}: {err['msg']} (got {err.get('input')!r})",
                hint="nothing was inserted; fix the row and run again",
            ) from None
        count += 1
    if count == 0:
        raise InputFileError(f"{path} has no rows")
    return count


def file_rows(path: Path) -> Iterator[tuple[str, int, str, str | None]]:
    from moviectl.models import MovieCreate

    for _, rec in _file_records(path):
        m = MovieCreate.model_validate({k: rec.get(k) for k in COLUMNS})
        yield m.title, m.year, m.genre, None if m.rating is None else str(m.rating)


# ---- running a seed ------------------------------------------------------------------------
def _check_head(settings: Settings, target: DbTarget) -> None:
    from moviectl.migrations import head_revision

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
        rows = sample_lines(total, random_seed) if path is None else map(_copy_line, rows)
    with connect(t, connect_timeout=settings.connect_timeout) as c:
        done = c.execute(
            "SELECT id, started_at, finished_at FROM seed_runs WHERE key = %s AND status = 'done' "
            "ORDER BY id DESC LIMIT 1",
            (key,),
        ).fetchone()
        if done and not again:
            return SeedResult(done[0], "already seeded", source, key, total, 0, "none",
                              seed_value, str(path) if path else None, digest, 0.0, None,
                              done[1], done[2])  # fmt: skip
        run_id = c.execute(
            "INSERT INTO seed_runs (key, source, file_name, sha256, requested, random_seed, "
            "method, status) VALUES (%s, %s, %s, %s, %s, %s, %s, 'running') RETURNING id",
            (key, source, str(path) if path else None, digest, total, seed_value, method),
        ).fetchone()[0]  # type: ignore[index]
    try:
        inserted = (_copy if method == "copy" else _orm)(settings, t, rows, total, run_id, progress)
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
    return SeedResult(run_id, "done", source, key, total, inserted, method, seed_value,
                      str(path) if path else None, digest, round(seconds, 3),
                      round(inserted / seconds, 1) if seconds else None,
                      times[0] if times else None, times[1] if times else None)  # fmt: skip


# marks a ledger row done, inside the data's own transaction (psycopg named parameters)
_FINISH = (
    "UPDATE seed_runs SET status = 'done', rows_inserted = %(n)s, "
    "finished_at = clock_timestamp() WHERE id = %(id)s"
)


def _copy(settings: Settings, t: DbTarget, rows: Iterator[str], total: int, run_id: int,
          progress: Progress | None) -> int:  # fmt: skip
    """Stream COPY text lines in one transaction (with the ledger update).

    This thread generates chunks; a second one sends them (psycopg releases the GIL
    while it writes). The queue between them holds a few chunks, so memory stays flat
    however many rows there are.
    """
    import queue
    import threading

    done = 0
    pipe: queue.Queue[str | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
    failures: list[BaseException] = []

    def put(item: str | None) -> None:
        while True:
            try:
                pipe.put(item, timeout=0.2)
                return
            except queue.Full:
                if failures:
                    raise failures[0] from None

    with connect(t, connect_timeout=settings.connect_timeout, autocommit=False) as c:
        with c.cursor() as cur:
            with cur.copy("COPY movies (title, year, genre, rating) FROM STDIN") as copy:

                def send() -> None:
                    while (item := pipe.get()) is not None:
                        if failures:
                            continue  # drain, so the producer never blocks
                        try:
                            copy.write(item)
                        except BaseException as exc:
                            failures.append(exc)

                sender = threading.Thread(target=send, name="moviectl-copy", daemon=True)
                sender.start()
                try:
                    chunk: list[str] = []
                    for line in rows:
                        chunk.append(line)
                        if len(chunk) == CHUNK:
                            put("".join(chunk))
                            done += CHUNK
                            chunk = []
                            if progress:
                                progress(done, total)
                    put("".join(chunk))
                    done += len(chunk)
                finally:
                    with contextlib.suppress(BaseException):
                        put(None)
                    sender.join()
                if failures:
                    raise failures[0]
            cur.execute(_FINISH, {"n": done, "id": run_id})
        c.commit()
    if progress:
        progress(done, total)
    return done


def _esc(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))  # fmt: skip
    return text


def _orm(settings: Settings, t: DbTarget, rows: Iterator[Any], total: int, run_id: int,
         progress: Progress | None) -> int:  # fmt: skip
    """Insert through the repository (one transaction, with the ledger update)."""
    from sqlalchemy import text

    from moviectl.engine import session_scope
    from moviectl.repository import MovieRepository

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
            session.execute(text(_FINISH.replace("%(n)s", ":n").replace("%(id)s", ":id")),
                            {"n": done, "id": run_id})  # fmt: skip
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
    from moviectl.settings import parse_db_url

    return seed(settings, sample=n, target=parse_db_url(url))
