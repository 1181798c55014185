"""Where the project is: the directory moviectl works from, and its relative paths."""

from __future__ import annotations

from pathlib import Path

from moviectl.infra.errors import ConfigError


def project_root(start: Path | None = None) -> Path:
    """The directory moviectl works from, found upwards from ``start`` as git finds its
    repository: the nearest one holding ``.moviectl/``, ``.env`` or the compose file; the
    search stops at a ``.git`` directory and never takes ``/`` or ``/tmp``; else ``start``."""
    try:
        here = d = (start or Path.cwd()).resolve()
    except FileNotFoundError:
        raise ConfigError(
            "the current directory no longer exists",
            hint="cd into the project directory (or any existing one) and run it again",
        ) from None
    markers = (".moviectl", ".env", "compose/docker-compose.yml")
    while str(d) not in ("/", "/tmp"):
        if any((d / m).exists() for m in markers):
            return d
        if (d / ".git").exists():
            break
        d = d.parent
    return here


def in_project(path: Path, root: Path) -> Path:
    """A relative path setting is the project root's, so a command run from a subdirectory
    finds the same files (from the root itself it stays relative, as given)."""
    return root / path if not path.is_absolute() and root != Path.cwd().resolve() else path
