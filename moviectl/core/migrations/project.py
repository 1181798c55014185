"""Whose schema moviectl manages: the service's migrations and models, or its own.

A service points moviectl at its schema in its ``pyproject.toml``::

    [tool.moviectl]
    migrations = "alembic"                               # holds versions/ (env.py optional)
    metadata = "movie_service.app.models:metadata"       # module:attribute, a MetaData

``MOVIE_MIGRATIONS_DIR`` and ``MOVIE_METADATA`` (environment) override either. With
nothing configured, moviectl manages the movie schema it ships (``alembic/`` in a
checkout, ``moviectl/_alembic`` in a wheel; ``moviectl.infra.models:metadata``).

A migrations directory without an ``env.py`` runs under moviectl's own env.py (its lock,
timeouts and connection from settings) with the service's ``versions/``: the service
keeps only its scripts. Relative paths are the pyproject.toml's directory's; the
metadata's module is imported with that directory (and its ``src/``) on ``sys.path``.
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from moviectl.infra.errors import ConfigError, ToolMissing, UsageError

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # moviectl/
DEFAULT_METADATA = "moviectl.infra.models:metadata"


@dataclass(frozen=True)
class SchemaSource:
    scripts: Path  # Alembic's script_location: env.py, script.py.mako
    versions: Path  # the migration scripts themselves
    metadata: str  # "module:attribute"
    origin: str  # where this came from, for messages and `config show`
    root: Path | None = None  # the service's directory (its pyproject.toml's)

    @property
    def own(self) -> bool:
        """moviectl's own shipped schema (not a service's)."""
        return self.versions.resolve() == (shipped_scripts() / "versions").resolve()


def shipped_scripts() -> Path:
    for candidate in (PACKAGE_DIR / "_alembic", PACKAGE_DIR.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ToolMissing("moviectl's migration scripts are missing from this installation")


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml with a ``[tool.moviectl]`` table, upwards from ``start``;
    the search stops at a repository's top (``.git``)."""
    try:
        d = (start or Path.cwd()).resolve()
    except FileNotFoundError:
        return None
    while True:
        candidate = d / "pyproject.toml"
        if candidate.is_file() and _tool_table(candidate) is not None:
            return candidate
        if (d / ".git").exists() or d.parent == d:
            return None
        d = d.parent


def _tool_table(path: Path) -> dict[str, Any] | None:
    return _read_tool_table(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=8)
def _read_tool_table(path: Path, _mtime: int) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(
            f"{path} is not valid TOML: {exc}", hint="fix the file (moviectl reads [tool.moviectl])"
        ) from None
    table = data.get("tool", {}).get("moviectl")
    if table is not None and not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.moviectl] must be a table")
    return table


def _as_dir(value: str, base: Path, named: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_dir():
        raise UsageError(
            f"{named} = {value!r}: {path} is not a directory",
            hint="create it (mkdir -p alembic/versions) or fix the setting",
        )
    return path


def schema_source() -> SchemaSource:
    """The configured schema: environment over pyproject.toml over moviectl's own."""
    env_dir = os.environ.get("MOVIE_MIGRATIONS_DIR") or None
    env_meta = os.environ.get("MOVIE_METADATA") or None
    pyproject = find_pyproject()
    table = _tool_table(pyproject) if pyproject else None
    root = pyproject.parent if pyproject else None
    origin = "moviectl's own schema"
    directory: Path | None = None
    if env_dir:
        directory = _as_dir(env_dir, Path.cwd(), "MOVIE_MIGRATIONS_DIR")
        origin = "MOVIE_MIGRATIONS_DIR"
    elif table and table.get("migrations") and pyproject and root:
        directory = _as_dir(str(table["migrations"]), root, f"{pyproject} migrations")
        origin = f"{pyproject} [tool.moviectl]"
    metadata = env_meta or (str(table["metadata"]) if table and table.get("metadata") else None)
    if metadata and origin == "moviectl's own schema":
        origin = "MOVIE_METADATA" if env_meta else f"{pyproject} [tool.moviectl]"
    if directory is None:
        directory = scripts = shipped_scripts()
    else:
        scripts = directory if (directory / "env.py").is_file() else shipped_scripts()
    return SchemaSource(scripts, directory / "versions", metadata or DEFAULT_METADATA, origin, root)


def _importable(root: Path | None) -> None:
    for path in (root, root / "src" if root else None):
        if path is not None and path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))


def split_spec(spec: str) -> tuple[str, str]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(
            f"metadata = {spec!r} is not module:attribute",
            hint='e.g. metadata = "movie_service.app.models:metadata"',
        )
    return module, attr


def target_metadata(source: SchemaSource | None = None) -> Any:
    """The configured MetaData (or a list of them), imported now."""
    import importlib

    src = source or schema_source()
    module_name, attr = split_spec(src.metadata)
    _importable(src.root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"metadata = {src.metadata!r} ({src.origin}): cannot import {module_name}: {exc}",
            hint="install the service's package in this environment (uv pip install -e .) "
            "or fix the module path",
        ) from None
    found: Any = module
    for part in attr.split("."):
        found = getattr(found, part, None)
        if found is None:
            raise ConfigError(f"metadata = {src.metadata!r}: {module_name} has no {attr}")
    if hasattr(found, "metadata") and not hasattr(found, "sorted_tables"):
        found = found.metadata  # a declarative base or SQLModel class
    return found


def metadata_source_file(source: SchemaSource | None = None) -> bytes:
    """The source of the module defining the metadata (names test-database templates),
    found without importing it where it can be."""
    from importlib.util import find_spec

    src = source or schema_source()
    module_name, _ = split_spec(src.metadata)
    _importable(src.root)
    try:
        spec = find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    origin = spec.origin if spec else None
    return Path(origin).read_bytes() if origin and Path(origin).is_file() else b"missing"
