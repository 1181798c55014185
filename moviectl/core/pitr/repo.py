"""Which PITR store the settings name: ``MOVIE_BACKUP_DIR/pitr``, or an ``s3://``
repository's ``pitr/`` (``s3store.py``). Apart from ``store.py`` so that the two stores'
modules do not import each other."""

from __future__ import annotations

from pathlib import Path

from moviectl.core.pitr.store import LocalStore, PitrStore
from moviectl.infra.settings import Settings


def store_of(settings: Settings) -> PitrStore:
    """``MOVIE_BACKUP_DIR/pitr``; with an ``s3://`` MOVIE_BACKUP_REPO (the first, when
    two), that repository's ``pitr/`` with this directory as its local side."""
    root = Path(settings.backup_dir) / "pitr"
    first = (settings.backup_repo or "").split(",")[0].strip()
    if first.startswith("s3://"):
        from moviectl.core.pitr.s3store import open_s3_store

        return open_s3_store(root, first, settings)
    return LocalStore(root)
