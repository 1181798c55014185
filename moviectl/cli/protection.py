"""The protected-environment override option and the "which environment" words of prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from moviectl.infra.protect import OVERRIDE_FLAG

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget
    from moviectl.infra.settings import Settings

OverrideOpt = Annotated[
    bool,
    typer.Option(
        OVERRIDE_FLAG,
        help="Act on a database marked protected (`moviectl db protect`); "
        "or MOVIE_ALLOW_PROTECTED=<database>.",
    ),
]


def touching(settings: Settings, target: DbTarget | None = None) -> str:
    """``database movies at host:port (environment PRODUCTION, protected)`` / ``(not
    protected)`` / ``(its protection unknown…)``: the words of destructive prompts."""
    from moviectl.infra.protect import UNKNOWN, environment_of

    t = target or settings.target()
    env = environment_of(settings, target)
    if env == UNKNOWN:
        mark = "its protection unknown: the server did not answer"
    else:
        mark = f"environment {env.upper()}, protected" if env else "not protected"
    return f"database {t.database} at {t.host}:{t.port} ({mark})"
