"""`moviectl backup verify`: the checksum, then the restore drill.

The backup is restored into a throwaway ``movies_verify_<hex>`` database, its
revision and row counts are compared with the manifest, and the database is
dropped again; the outcome is recorded in the manifest.
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path

from moviectl.core.backups.dump import snapshot
from moviectl.core.backups.manifest import (
    VerifyResult,
    check_checksum,
    load_manifest,
    record_verification,
)
from moviectl.core.backups.restore import (
    compare,
    create_database_for_restore,
    drop_database,
    load_into,
)
from moviectl.core.backups.sqlguard import check_sql_file
from moviectl.infra.engine import require_session
from moviectl.infra.errors import CheckFailed, MoviectlError, Unreachable
from moviectl.infra.settings import Settings


def verify(settings: Settings, path: Path, hashed: str | None = None) -> VerifyResult:
    """Checksum, then the restore drill: restore into a throwaway database and compare.
    ``hashed``: the file's sha256, computed as it was downloaded (``catalog.staged``)."""
    man = load_manifest(path)
    try:
        check_checksum(path, man, hashed)
    except CheckFailed as exc:
        result = VerifyResult(str(path), False, None, False, False, [exc.message])
        record_verification(path, man, result.ok)
        return result
    if man.format == "plain":  # a forged file is refused before a database is made
        check_sql_file(path)
    name = f"movies_verify_{secrets.token_hex(6)}"
    settings = require_session(settings, "verify", "postgres")  # never through a pooler
    create_database_for_restore(settings, name, loading="verify", backup_dir=path.parent)
    try:
        load_into(settings, path, man, settings.target(name), None)
        _, _, rev, counts = snapshot(settings, settings.target(name))
    except Unreachable:
        raise  # the server is gone: the marked database is dropped by the next run
    except BaseException:
        with contextlib.suppress(MoviectlError):
            drop_database(settings, name)
        raise
    drop_database(settings, name)
    diffs = compare(man, rev, counts)
    result = VerifyResult(
        str(path),
        True,
        name,
        rev == man.alembic_revision,
        not [d for d in diffs if "rows" in d],
        diffs,
    )
    try:
        record_verification(path, man, result.ok)
    except OSError as exc:  # a read-only or full backup directory: the drill still counts
        result.note = f"could not record the result in the manifest: {exc.strerror or exc}"
    return result
