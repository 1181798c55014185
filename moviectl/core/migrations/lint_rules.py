"""`migrate lint`'s rules: each hazard's stable id, why it locks or breaks running code, and
the safe rewrite (the checks that find them are ``lint_checks.py``).

``weighed`` rules cost a lock whose length grows with the table: with a database they are
weighed by its size. The others break regardless of size.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    why: str
    fix: str
    weighed: bool  # True: a lock whose cost grows with the table (weighed by its size)


_LATER = (
    "in a later transaction (a later migration, or after "
    "`with op.get_context().autocommit_block(): pass`)"
)

RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule(
            "index-not-concurrent",
            "CREATE INDEX without CONCURRENTLY holds a SHARE lock: every INSERT, UPDATE and "
            "DELETE on the table waits for the whole build",
            "op.create_index(..., postgresql_concurrently=True) inside "
            "`with op.get_context().autocommit_block():`",
            True,
        ),
        Rule(
            "concurrently-in-transaction",
            "CONCURRENTLY cannot run inside a transaction block: the migration fails there",
            "run it inside `with op.get_context().autocommit_block():`",
            False,
        ),
        Rule(
            "constraint-builds-index",
            "ADD CONSTRAINT UNIQUE / PRIMARY KEY / EXCLUDE builds its index under an ACCESS "
            "EXCLUSIVE lock: reads and writes wait for the whole build",
            "CREATE UNIQUE INDEX CONCURRENTLY (in an autocommit_block), then "
            "ALTER TABLE … ADD CONSTRAINT … UNIQUE USING INDEX …",
            True,
        ),
        Rule(
            "volatile-default",
            "ADD COLUMN whose value is computed per row (a volatile default, serial, identity "
            "or stored generated column) rewrites the whole table under an ACCESS EXCLUSIVE "
            "lock (PostgreSQL 11+ adds constant and stable defaults such as now() without one)",
            "add the column without that default, then set it with op.alter_column(..., "
            "server_default=...) (new rows only) and backfill existing rows in batches",
            True,
        ),
        Rule(
            "set-not-null",
            "SET NOT NULL scans the whole table under an ACCESS EXCLUSIVE lock: reads and "
            "writes wait",
            "add CHECK (col IS NOT NULL) NOT VALID (create_check_constraint(..., "
            f"postgresql_not_valid=True)), VALIDATE CONSTRAINT it {_LATER}, then SET NOT NULL "
            "(PostgreSQL 12+ skips the scan) and drop the check",
            True,
        ),
        Rule(
            "column-type-change",
            "ALTER COLUMN TYPE rewrites the table and its indexes under an ACCESS EXCLUSIVE lock "
            "(unless binary-compatible: widening a varchar, varchar to text)",
            "expand/contract: add a column of the new type, backfill in batches, switch the "
            "code, drop the old column later; acknowledge a binary-compatible change",
            True,
        ),
        Rule(
            "fk-without-not-valid",
            "a FOREIGN KEY validated when added scans the whole table while both tables hold "
            "SHARE ROW EXCLUSIVE locks: writes wait",
            "create_foreign_key(..., postgresql_not_valid=True), then "
            f"ALTER TABLE … VALIDATE CONSTRAINT … {_LATER}",
            True,
        ),
        Rule(
            "check-without-not-valid",
            "a CHECK constraint validated when added scans the whole table under an ACCESS "
            "EXCLUSIVE lock: reads and writes wait",
            "create_check_constraint(..., postgresql_not_valid=True), then "
            f"ALTER TABLE … VALIDATE CONSTRAINT … {_LATER}",
            True,
        ),
        Rule(
            "drop-column",
            "the release still running during the deploy reads and writes the column: its "
            "queries fail once it is gone",
            "expand/contract: ship code that no longer uses the column, drop it in a later release",
            False,
        ),
        Rule(
            "drop-table",
            "the release still running during the deploy queries the table: it fails once "
            "the table is gone",
            "expand/contract: ship code that no longer uses the table, drop it in a later release",
            False,
        ),
        Rule(
            "rename-column",
            "the release still running during the deploy uses the old name: its queries fail "
            "the moment it changes",
            "expand/contract: add the new column, write both, backfill, switch reads, drop the "
            "old one in a later release",
            False,
        ),
        Rule(
            "rename-table",
            "the release still running during the deploy uses the old name: its queries fail "
            "the moment it changes",
            "expand/contract: rename and leave an updatable view under the old name (or copy), "
            "switch the code, drop the old name in a later release",
            False,
        ),
        Rule(
            "syntax-error",
            "PostgreSQL's parser rejects the SQL this migration renders: the migration fails",
            "fix the operation (`moviectl migrate --sql` shows the SQL it renders)",
            False,
        ),
    )
}

# Functions PostgreSQL marks volatile that appear in column defaults (offline knowledge;
# with a database, pg_proc.provolatile answers for any other function).
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "gen_random_bytes",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "txid_current",
        "pg_current_xact_id",
    }
)
SERIAL_TYPES = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
