"""Backups you can trust: dump (``dump.py``, ``container_dump.py``), manifest and listing
(``manifest.py``, ``fileio.py``), restore (``restore.py``) and the restore drill (``verify.py``)."""
