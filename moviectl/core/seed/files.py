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


def _json_items(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """(line, item) for a JSON array, each item with the line it starts on."""
    decoder, i, n, line, seen = json.JSONDecoder(), 0, len(text), 1, 0

    def skip(at: int) -> int:
        while at < n and text[at] in " \t\r\n":
            at += 1
        return at

    def line_at(at: int) -> int:
        nonlocal line, seen
        line, seen = line + text.count("\n", seen, at), at
        return line

    i = skip(0)
    if i >= n or text[i] != "[":
        raise InputFileError(f"{path}: expected a JSON array of movies")
    i = skip(i + 1)
    if i < n and text[i] == "]":
        return
    while True:
        try:
            item, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}") from None
        yield line_at(i), item
        i = skip(end)
        if i < n and text[i] == ",":
            i = skip(i + 1)
            continue
        if i < n and text[i] == "]":
            return
        raise InputFileError(f"{path}, line {line_at(min(i, n))}: expected ',' or ']'")


def _file_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for a CSV, JSON or JSONL file; streams CSV. A UTF-8 BOM (what
    spreadsheets write) is fine; every problem names the file's real line."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".json", ".jsonl", ".ndjson"):
            text = path.read_text(encoding="utf-8-sig")
            if suffix == ".json":
                items: Iterator[tuple[int, Any]] = _json_items(text, path)
            else:
                items = _jsonl_items(text, path)
            for no, rec in items:
                if not isinstance(rec, dict):
                    raise InputFileError(
                        f"{path}, line {no}: expected an object like "
                        '{"title": …, "year": …, "genre": …}'
                    )
                yield no, rec
            return
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            try:
                fields = reader.fieldnames
            except csv.Error as exc:
                raise InputFileError(f"{path}, line 1: {exc}") from None
            if fields is None:
                raise InputFileError(
                    f"{path} is empty", hint="expected columns: title,year,genre,rating"
                )
            missing = [c for c in ("title", "year", "genre") if c not in fields]
            if missing:
                raise InputFileError(
                    f"{path}: missing column(s) {', '.join(missing)}",
                    hint=f"the header has: {', '.join(fields)}; expected title,year,genre,rating",
                )
            while True:
                try:
                    rec = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # the line it was reading when it failed
                    raise InputFileError(f"{path}, line {reader.line_num + 1}: {exc}") from None
                yield reader.line_num, {k: (v if v != "" else None) for k, v in rec.items()}
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path} is not valid UTF-8 (byte {exc.start}): {exc.reason}",
            hint="re-encode the file as UTF-8",
        ) from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply to be a movie") from None


def _jsonl_items(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    for no, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{path}, line {no}: invalid JSON: {exc.msg}") from None


def _bad_text(rec: dict[str, Any]) -> str | None:
    for key in ("title", "genre"):
        value = rec.get(key)
        if isinstance(value, str) and ("\x00" in value or not value.strip()):
            return f"{key}: empty, blank or containing a NUL character"
    return None


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
        bad = _bad_text(rec)
        if bad:
            raise InputFileError(
                f"{path}, line {no}: {bad}", hint="nothing was inserted; fix the row and run again"
            )
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
