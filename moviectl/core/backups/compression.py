"""How a backup is compressed: ``--compress ALGO[:LEVEL]`` parsed, the default chosen,
and pg_dump's ``-Z`` spelled for the pg_dump that runs.

Compression is nearly all of a custom-format dump's time: gzip at pg_dump's default level
6 costs about twice level 1 for a file a sixth smaller. The default is therefore the fastest
good choice the pg_dump in use has: zstd level 1 (PostgreSQL 16+ built with zstd), else
gzip level 1. pg_dump 15 and older know only ``-Z N`` (gzip): a method name is translated
for them, or refused in one line when they cannot do it (lz4, zstd).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from moviectl.infra.errors import UsageError

METHODS = ("gzip", "lz4", "zstd", "none")
# the levels pg_dump accepts (PostgreSQL's common/compression.c; zstd's negative levels
# are left out: nobody picks them for a backup)
_LEVELS = {"gzip": (1, 9), "lz4": (1, 12), "zstd": (1, 22)}
DEFAULT_LEVEL = 1
_SYNTAX = re.compile(r"(?P<method>[a-z][a-z0-9]{0,9}|\d{1,3})(?::(?:level=)?(?P<level>-?\d{1,3}))?")
HINT = "METHOD[:LEVEL] with gzip (1-9), lz4 (1-12), zstd (1-22) or none; e.g. zstd:3, gzip:6"


@dataclass(frozen=True)
class Compression:
    method: str  # gzip | lz4 | zstd | none
    level: int | None  # None: none, or the method's own default level

    @property
    def spec(self) -> str:
        """As the manifest records it and PostgreSQL 16+ spells it: ``gzip:1``, ``none``."""
        if self.method == "none" or self.level is None:
            return self.method
        return f"{self.method}:{self.level}"


def parse(value: str) -> Compression:
    """``--compress``: ALGO[:LEVEL] (or pg_dump's ``ALGO:level=N``), or a bare gzip level."""
    text = value.strip().lower()
    m = _SYNTAX.fullmatch(text)
    if m is None:
        raise UsageError(f"bad --compress value {value!r}", hint=HINT)
    method, level = m["method"], None if m["level"] is None else int(m["level"])
    if method.isdigit():  # pg_dump 15's -Z N: a gzip level, 0 meaning none
        if m["level"] is not None:
            raise UsageError(f"bad --compress value {value!r}", hint=HINT)
        method, level = ("none", None) if int(method) == 0 else ("gzip", int(method))
    if method not in METHODS:
        raise UsageError(f"unknown compression method {method!r} in --compress", hint=HINT)
    if method == "none":
        if level not in (None, 0):
            raise UsageError("--compress none takes no level", hint=HINT)
        return Compression("none", None)
    low, high = _LEVELS[method]
    if level is not None and not low <= level <= high:
        raise UsageError(f"{method} levels are {low}-{high}, not {level}", hint=HINT)
    return Compression(method, level)


def default(fmt: str, methods: frozenset[str]) -> Compression:
    """The fastest good compression the pg_dump in use has (``methods``: what it can do)."""
    if fmt == "plain":
        return Compression("none", None)  # SQL stays SQL: psql reads it back
    return Compression("zstd" if "zstd" in methods else "gzip", DEFAULT_LEVEL)


def choose(
    requested: str | None, fmt: str, tool: str, version: str, methods: frozenset[str]
) -> Compression:
    """The compression this backup uses, or one clear line (exit 2) why it cannot be had.

    ``tool``/``version``: the pg_dump that will run (its path, or the container's),
    ``methods``: what that build compresses with."""
    if requested is None:
        return default(fmt, methods)
    comp = parse(requested)
    if fmt == "plain" and comp.method != "none":
        raise UsageError(
            "--format plain is not compressed (psql reads it back as SQL)",
            hint="use --format custom or directory to compress, or leave --compress out",
        )
    if comp.method not in methods | {"none"}:
        major = int(version.split(".")[0]) if version[:1].isdigit() else 0
        why = (
            f"pg_dump {version} compresses only with gzip (lz4 and zstd need PostgreSQL 16+)"
            if 0 < major < 16
            else f"pg_dump {version} was built without {comp.method}"
        )
        raise UsageError(
            f"{why}: cannot honour --compress {requested} ({tool})",
            hint="use --compress gzip[:LEVEL] or none, or point MOVIE_PG_BIN_DIR at a "
            f"pg_dump 16+ built with {comp.method}",
        )
    return comp


def z_argv(comp: Compression, version: str) -> list[str]:
    """pg_dump's ``-Z`` for ``comp``, as this pg_dump's version spells it."""
    major = int(version.split(".")[0]) if version[:1].isdigit() else 16
    if major >= 16:
        return ["-Z", comp.spec]
    if comp.method == "none":
        return ["-Z", "0"]
    assert comp.method == "gzip", comp  # choose() refused the others
    return ["-Z", str(6 if comp.level is None else comp.level)]
