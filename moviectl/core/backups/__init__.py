"""Backups you can trust: dump (``dump.py``, ``container.py``), manifest and listing
(``manifest.py``, ``files.py``), restore (``restore.py``) and the restore drill (``verify.py``)."""
