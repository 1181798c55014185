"""Seed files (CSV, JSON, JSONL): read, validated row by row, with line numbers."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moviectl.infra.errors import InputFileError

COLUMNS = ("title", "year", "genre", "rating")


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

    from moviectl.infra.models import MovieCreate

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
    from moviectl.infra.models import MovieCreate

    for _, rec in _file_records(path):
        m = MovieCreate.model_validate({k: rec.get(k) for k in COLUMNS})
        yield m.title, m.year, m.genre, None if m.rating is None else str(m.rating)
