"""Seed data: deterministic samples (``sample.py``), seed files (``fileio.py``), COPY
streaming (``copy_stream.py``) and the run with its ledger (``load.py``)."""
