"""The external backend: a server moviectl does not manage."""

from __future__ import annotations

import time
from collections.abc import Iterator

from moviectl.core.servers.base import DownResult, ServerStatus, UpResult, probe_status, wait_ready
from moviectl.infra.errors import Refused
from moviectl.infra.settings import Settings


class ExternalBackend:
    """A server moviectl does not manage: `db up` waits for it, `db down` refuses."""

    name = "external"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def up(self, *, wait: bool = True, timeout: float = 60) -> UpResult:
        started_at = time.monotonic()
        target = self.settings.target()
        version = wait_ready(target, timeout, self.settings.connect_timeout) if wait else None
        return UpResult.of(
            self.name,
            target,
            already=True,
            version=version,
            started_at=started_at,
            detail="external server: moviectl only waited for it",
        )

    def down(self, *, volumes: bool = False) -> DownResult:
        t = self.settings.target()
        raise Refused(
            f"moviectl does not manage the external server at {t.host}:{t.port}; "
            "stop it where it runs",
            hint="MOVIE_DB_BACKEND=external means someone else owns this server",
        )

    def status(self) -> ServerStatus:
        target = self.settings.target()
        status = ServerStatus.of(self.name, target, "running")
        return probe_status(status, target, self.settings.connect_timeout)

    def logs(self, *, tail: int = 50, follow: bool = False) -> Iterator[str]:
        raise Refused("moviectl cannot read the logs of an external server")
