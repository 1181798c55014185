"""`testdb prune`: drop expired or old test databases and templates of other hashes.

The same rails as ``testdb drop`` (``testdb.py``): only databases carrying moviectl's
ownership mark and its names, and never a database marked protected (``db protect``,
``infra/protect.py``) whatever its name or mark, unless MOVIE_ALLOW_PROTECTED names it. A
prune runs from cron, so a protected database is kept and reported (``protected``), not
a failure of the whole sweep; the mark is read again right before each drop.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from moviectl.core.testdb import (
    TEMPLATE_NAME,
    TEST_NAME,
    admin_session,
    as_test_db,
    template_hash,
)
from moviectl.infra.admin import (
    TEMPLATE_PREFIX,
    TEST_PREFIX,
    admin_target,
    databases_named_like,
    drop_database_force,
)
from moviectl.infra.processes import pid_alive
from moviectl.infra.protect import marks, overridden
from moviectl.infra.settings import DbTarget, Settings


@dataclass
class PruneResult:
    dropped: list[str]
    kept: list[str]
    protected: list[str] = field(default_factory=list)  # due, but marked: kept


def abandoned(mark: dict[str, Any]) -> bool:
    """Was this database being seeded by a process on this host that is gone?"""
    owner = str(mark.get("owner") or "")
    host, _, pid = owner.rpartition("@")[2].partition(" pid ")
    if mark.get("state") != "seeding" or host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def prune(
    settings: Settings,
    *,
    older_than: timedelta | None = None,
    target: DbTarget | None = None,
    now: datetime | None = None,
) -> PruneResult:
    """Drop expired (or older than ``older_than``) test databases and stale templates.

    ``now``: the moment expiry is judged at (default: the current time).
    """
    admin = target or admin_target(settings)
    now = now or datetime.now(UTC)
    current_tpl = TEMPLATE_PREFIX + template_hash()
    result = PruneResult([], [])
    with admin_session(settings, admin) as conn:

        def drop_unless_protected(name: str) -> None:
            if marks(conn, name) and not overridden(settings, name, False):
                result.kept.append(name)
                result.protected.append(name)
                return
            drop_database_force(conn, name)
            result.dropped.append(name)

        for row in databases_named_like(conn, TEST_PREFIX):
            db = as_test_db(admin, row)
            if (row["mark"] or {}).get("kind") != "test" or not TEST_NAME.fullmatch(db.name):
                continue
            expired = db.expires_at is not None and db.expires_at <= now
            expired = expired or abandoned(row["mark"] or {})
            old = (
                older_than is not None
                and db.created_at is not None
                and (now - db.created_at >= older_than)
            )
            if expired or old:
                drop_unless_protected(db.name)
            else:
                result.kept.append(db.name)
        for row in databases_named_like(conn, TEMPLATE_PREFIX):
            mark = row["mark"] or {}
            if mark.get("kind") != "template" or not TEMPLATE_NAME.fullmatch(row["name"]):
                continue
            if row["name"] == current_tpl:
                result.kept.append(row["name"])
                continue
            drop_unless_protected(row["name"])
    return result
