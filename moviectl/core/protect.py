"""`db protect`: mark the app database as a protected environment, or lift the mark.

The mark and the guard live in ``infra/protect.py`` (every destructive command reads it);
this is the command's side: set it, remove it, report it.
"""

from __future__ import annotations

from dataclasses import dataclass

from moviectl.infra.engine import connect
from moviectl.infra.protect import SETTING, marks, set_mark
from moviectl.infra.settings import Settings


@dataclass
class Protection:
    database: str
    url: str
    setting: str
    environment: str | None  # None: not protected
    changed: bool


def protect(settings: Settings, environment: str | None = "production") -> Protection:
    """Mark the app database as ``environment`` (None: lift the mark); idempotent."""
    target = settings.session_target()
    with connect(target, connect_timeout=settings.connect_timeout) as conn:
        before = marks(conn, target.database).get(target.database)
        if before != environment:
            set_mark(conn, target.database, environment)
        after = marks(conn, target.database).get(target.database)
    return Protection(target.database, settings.target().url(), SETTING, after, before != after)
