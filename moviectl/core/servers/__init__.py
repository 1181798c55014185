"""Server backends: embedded PostgreSQL, Docker (compose file + SDK), external.

``get_backend(settings)`` picks one (``MOVIE_DB_BACKEND``; ``auto`` = Docker when an
engine answers, else embedded). Every backend returns the dataclasses of ``base.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import ConfigError, MoviectlError

if TYPE_CHECKING:
    from collections.abc import Callable

    from moviectl.core.servers.base import Backend, UpResult
    from moviectl.infra.settings import Settings


def resolve_auto(settings: Settings) -> str:
    """``auto``: what runs already wins; else Docker when an engine answers, else embedded.

    Returns ``docker?`` when Docker would be tried but its image is not here yet: ``db up``
    then pulls it and falls back to embedded if the pull fails (no registry reachable).
    """
    from moviectl.core.servers.docker import DockerBackend
    from moviectl.core.servers.docker_engine import engine_answers
    from moviectl.core.servers.embedded import embedded_server

    try:
        if embedded_server(settings).state().running:
            return "embedded"
    except MoviectlError:
        pass
    if not engine_answers():
        return "embedded"
    docker = DockerBackend(settings)
    if docker.container() is not None or docker.image_present():
        return "docker"
    return "docker?"


def get_backend(
    settings: Settings,
    progress: Callable[[dict[str, Any]], None] | None = None,
    *,
    for_up: bool = False,
) -> Backend:
    choice: str = settings.db_backend
    if choice == "auto":
        choice = resolve_auto(settings)
        if choice == "docker?":
            if not for_up:
                choice = "embedded"
            else:
                return DockerOrEmbedded(settings, progress)
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
