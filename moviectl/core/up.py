"""`moviectl up` / `down`: the whole development environment in one idempotent step."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from moviectl.core.health.checks import HealthReport, run_health
from moviectl.core.migrations.runner import MigrateResult, upgrade
from moviectl.core.seed.load import SeedResult, seed
from moviectl.core.servers import get_backend
from moviectl.core.servers.base import UpResult
from moviectl.infra.settings import Settings

SAMPLE = 3


@dataclass
class UpSummary:
    server: UpResult
    migrate: MigrateResult
    seeded: SeedResult | None
    movies: int
    health: HealthReport
    seconds: float
    next_steps: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (
            not self.server.already_running
            or bool(self.migrate.steps)
            or (self.seeded is not None and self.seeded.inserted > 0)
        )

    __json_extra__ = ("changed",)


def movie_count(settings: Settings) -> int:
    from moviectl.infra.engine import connect

    with connect(settings.target(), connect_timeout=settings.connect_timeout) as c:
        return int(c.execute("SELECT count(*) FROM movies").fetchone()[0])  # type: ignore[index]


def up(settings: Settings, *, timeout: float = 90, progress: Any = None) -> UpSummary:
    started = time.monotonic()
    server = get_backend(settings, progress, for_up=True).up(wait=True, timeout=timeout)
    migrated = upgrade(settings)
    movies = movie_count(settings)
    seeded = seed(settings, sample=SAMPLE) if movies == 0 else None
    if seeded is not None:
        movies += seeded.inserted
    health = run_health(settings)
    return UpSummary(
        server=server,
        migrate=migrated,
        seeded=seeded,
        movies=movies,
        health=health,
        seconds=round(time.monotonic() - started, 3),
        next_steps=[
            "moviectl db shell          # a SQL prompt on the app database",
            "moviectl health --wait     # readiness, as CI would check it",
            "moviectl testdb create     # a throwaway migrated database",
            "uv run pytest              # the test suite",
            "moviectl down              # stop the server (data stays)",
        ],
    )
