"""The repository interface (``repository.py`` explains it) and what it lists."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

BLOCK = 1 << 20
DOCUMENT_LIMIT = 16 << 20  # a manifest or a small record; more is not one of ours


@dataclass(frozen=True)
class ObjectInfo:
    name: str  # relative to the repository's root
    size: int
    modified: datetime


class Repository(Protocol):
    url: str  # shown to users: never a credential
    remote: bool

    def check(self) -> None: ...
    def put(self, name: str, source: Path | Iterable[bytes]) -> int: ...
    def stream(self, name: str) -> Iterator[bytes]: ...
    def get(self, name: str, dest: Path) -> int: ...
    def read_bytes(self, name: str) -> bytes: ...
    def write_bytes(self, name: str, data: bytes) -> None: ...
    def list(self, prefix: str = "") -> list[ObjectInfo]: ...
    def stat(self, name: str) -> ObjectInfo | None: ...
    def delete(self, name: str) -> None: ...
    def where(self, name: str) -> str: ...
