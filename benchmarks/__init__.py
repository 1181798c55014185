"""Every performance goal against its peer (`python benchmarks/run.py`)."""
