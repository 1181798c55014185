"""Migrations: the scripts (``scripts.py``), running them (``runner.py``), the migration
lock (``lock.py``) and the drift check (``drift.py``)."""
