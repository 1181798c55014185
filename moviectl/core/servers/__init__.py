"""Server backends: embedded PostgreSQL, Docker (compose file + SDK), external.

``get_backend(settings)`` picks one (``MOVIE_DB_BACKEND``; ``auto`` = Docker when an
engine answers, else embedded). Every backend returns the dataclasses of ``base.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import ConfigError, MoviectlError

if TYPE_CHECKING:
    from collections.abc import Callable

    from moviectl.core.servers.base import Backend, UpResult
    from moviectl.infra.settings import Settings


CHOICE_FILE = "backend"  # under MOVIE_DATA_DIR: the backend that holds this project's data


def remembered(settings: Settings) -> str | None:
    """The backend ``auto`` chose for this project before, if it recorded one."""
    path = Path(settings.data_dir) / CHOICE_FILE
    try:
        choice = path.read_text().strip()
    except OSError:
        return None
    return choice if choice in ("embedded", "docker") else None


def remember(settings: Settings, choice: str) -> None:
    d = Path(settings.data_dir)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    (d / CHOICE_FILE).write_text(choice + "\n")


def resolve_auto(settings: Settings) -> str:
    """``auto``: the backend that holds this project's data wins, and the choice is kept.

    Order: the remembered choice; a running embedded server; where the data is (a cluster
    under MOVIE_DATA_DIR, a container or volume of this compose project; both is an error
    that asks the operator to pick); else Docker when an engine and the image are here,
    ``docker?`` when the image would have to be pulled (``db up`` falls back to embedded).
    """
    from moviectl.core.servers.docker import DockerBackend
    from moviectl.core.servers.docker_engine import engine_answers
    from moviectl.core.servers.embedded import embedded_server

    choice = remembered(settings)
    if choice:
        return choice
    embedded_data = None
    try:
        server = embedded_server(settings)
        if server.state().running:
            return "embedded"
        embedded_data = server.pgdata if server.initialized() else None
    except MoviectlError:
        pass
    docker = DockerBackend(settings) if engine_answers() else None
    docker_data = docker.data_resource() if docker is not None else None
    if embedded_data and docker_data:
        raise ConfigError(
            f"two servers hold data for this project: an embedded cluster in {embedded_data} "
            f"and the Docker {docker_data}",
            hint="pick one: MOVIE_DB_BACKEND=embedded or MOVIE_DB_BACKEND=docker (in .env)",
        )
    if embedded_data:
        return "embedded"
    if docker_data:
        return "docker"
    if docker is None:
        return "embedded"
    return "docker" if docker.image_present() else "docker?"


def get_backend(
    settings: Settings,
    progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    for_up: bool = False,
) -> Backend:
    choice: str = settings.db_backend
    if choice == "auto":
        choice = resolve_auto(settings)
        if choice == "docker?" and not for_up:
            choice = "embedded"
        if for_up:  # the server `db up` brings up in auto mode is this project's from now on
            chosen = (
                DockerOrEmbedded(settings, progress)
                if choice == "docker?"
                else get_backend(settings.but(db_backend=choice), progress)
            )
            return RememberChoice(chosen, settings)
    if choice == "embedded":
        from moviectl.core.servers.embedded import EmbeddedBackend

        return EmbeddedBackend(settings)
    if choice == "docker":
        from moviectl.core.servers.docker import DockerBackend

        return DockerBackend(settings, progress=progress)
    if choice == "external":
        from moviectl.core.servers.external import ExternalBackend

        return ExternalBackend(settings)
    raise ConfigError(f"unknown MOVIE_DB_BACKEND {choice!r}")


class DockerOrEmbedded:
    """``auto`` before the Docker image is here: try Docker, fall back to embedded on ``up``."""

    name = "docker"

    def __init__(self, settings: Settings, progress: Callable[[dict[str, Any]], None] | None):
        from moviectl.core.servers.docker import DockerBackend

        self.settings = settings
        self.docker = DockerBackend(settings, progress=progress)
        self.down = self.docker.down
        self.status = self.docker.status
        self.logs = self.docker.logs

    def up(self, *, wait: bool = True, timeout: float = 90) -> UpResult:
        from moviectl.core.servers.docker_engine import ImageUnavailable
        from moviectl.core.servers.embedded import EmbeddedBackend

        try:
            return self.docker.up(wait=wait, timeout=timeout)
        except ImageUnavailable:
            result = EmbeddedBackend(self.settings).up(wait=wait, timeout=timeout)
            result.detail = (
                f"auto: Docker image {self.docker.svc.image} cannot be had, so embedded; "
                + result.detail
            )
            return result


class RememberChoice:
    """``auto``'s backend, recording after a successful ``up`` which one holds the data."""

    def __init__(self, inner: Any, settings: Settings) -> None:
        self.inner, self.settings, self.name = inner, settings, inner.name
        self.down, self.status, self.logs = inner.down, inner.status, inner.logs

    def up(self, *, wait: bool = True, timeout: float = 90) -> UpResult:
        result: UpResult = self.inner.up(wait=wait, timeout=timeout)
        if result.backend in ("embedded", "docker"):
            remember(self.settings, result.backend)
        return result
