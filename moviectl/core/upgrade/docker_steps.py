"""The steps of a Docker upgrade that talk to the servers: no writes since the safety
backup, the roles and the database's mark carried over, the restore, ANALYZE."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import CheckFailed, Refused

if TYPE_CHECKING:
    from moviectl.core.backups.manifest import Manifest
    from moviectl.infra.settings import Settings

ROLLBACK = "possible until --finish (the old data is kept in its own volume)"


def refuse_writers(settings: Settings, man: Manifest) -> None:
    """The restore carries what the safety backup holds: rows written since would be lost,
    so the upgrade stops while anything still writes (nothing changed yet)."""
    from moviectl.core.backups.dump import snapshot

    target = settings.target()
    _, _, rev, counts = snapshot(settings, target)
    if rev != man.alembic_revision or counts != man.row_counts:
        raise Refused(
            f"{target.database} on {target.host}:{target.port} changed during the safety "
            "backup (something still writes to it): refusing to upgrade",
            hint="stop what writes to it (the service), then run the upgrade again "
            "(nothing was changed)",
        )


def database_mark(settings: Settings) -> str | None:
    """The database's comment (moviectl's mark): pg_dump without --create leaves it out."""
    from moviectl.infra.admin import database_comment
    from moviectl.infra.engine import connect

    with connect(settings.target("postgres"), connect_timeout=settings.connect_timeout) as c:
        return database_comment(c, settings.target().database)[1]


def dump_globals(container: Any, settings: Settings) -> list[str]:
    """The old server's roles (with their password hashes: kept in memory only), by its own
    ``pg_dumpall --globals-only`` over the container's local socket."""
    if container is None:
        raise CheckFailed("the old db container is gone", hint="moviectl db up, then again")
    user = settings.target().user
    code, out = container.exec_run(
        ["pg_dumpall", "--globals-only", "-U", user], user="postgres", demux=True
    )
    if code != 0:
        raise CheckFailed(
            f"pg_dumpall --globals-only in {container.name} failed: "
            + (out[1] or b"").decode(errors="replace").strip()[-200:],
            hint="nothing was changed",
        )
    text = (out[0] or b"").decode()
    statements, buf = [], []
    for line in text.splitlines():
        if line.startswith(("--", "\\")) or not line.strip():
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(buf))
            buf = []
    return statements


def carry_globals(settings: Settings, statements: list[str]) -> None:
    """Each role statement on the new server; the ones that exist already (the superuser
    its entrypoint made) stay as they are."""
    import psycopg

    from moviectl.infra.engine import connect

    with connect(settings.target("postgres"), connect_timeout=settings.connect_timeout) as c:
        mine = re.compile(rf'ROLE "?{re.escape(settings.target().user)}"?[\s;]')
        for stmt in statements:
            if stmt.startswith("SET ") or mine.search(stmt):
                continue  # session settings; the superuser keeps the new entrypoint's
            try:
                c.execute(stmt.encode())
            except psycopg.errors.DuplicateObject:
                continue
            except psycopg.Error as exc:
                raise CheckFailed(
                    f"carrying the roles over failed: {str(exc).splitlines()[0]}",
                    hint="the old data is kept; the upgrade is undone",
                ) from None


def restore_into(settings: Settings, path: Path, man: Manifest, mark: str | None) -> None:
    """The safety backup into the new server's (empty) database, its mark back."""
    from moviectl.core.backups.restore import create_database_for_restore, load_into
    from moviectl.infra.admin import comment_database
    from moviectl.infra.engine import connect

    name = settings.target().database
    create_database_for_restore(settings, name, drop_first=True)
    load_into(settings, path, man, settings.target(), None)
    if mark:
        with connect(settings.target("postgres"), connect_timeout=settings.connect_timeout) as c:
            comment_database(c, name, mark)


def analyze_in(container: Any, settings: Settings) -> str:
    """Statistics: a dump carries none; ANALYZE in stages (the cheap ones first) by the new
    server's own vacuumdb."""
    args = ["vacuumdb", "--all", "--analyze-in-stages"]
    code, out = container.exec_run(
        [*args, "-U", settings.target().user], user="postgres", demux=True
    )
    if code != 0:
        raise CheckFailed(
            "vacuumdb failed: " + (out[1] or b"").decode(errors="replace").strip()[-200:]
        )
    return " ".join(args)
