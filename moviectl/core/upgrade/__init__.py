"""`moviectl db upgrade`: a major-version upgrade of the embedded cluster by PostgreSQL's
own ``pg_upgrade`` (or dump and restore), with a verified safety backup first, the known
traps checked up front, verification after, the old cluster kept until ``--finish`` and
``--rollback`` where the method allows; ``--dry-run`` does it all on a throwaway copy.
"""
