"""`moviectl inspect`: what is slow, big, blocked or bloated, asked of the server's catalogs.

Each subcommand is one query per supported major (``model.by_major``), run on a connection
bounded by a statement and a lock timeout (``session``), so it never waits behind the locks
it reports. The modules group the queries by theme; ``registry`` names them.
"""
