"""The known traps of a major upgrade, checked on the running old cluster before anything
changes, each with its fix; and the initdb options that make the new cluster match."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.upgrade.binaries import share_dir
from moviectl.core.upgrade.model import Trap

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget


@dataclass
class ClusterFacts:
    checksums: bool
    encoding: str
    collate: str
    ctype: str
    databases: list[str]


def read_facts(target: DbTarget, connect_timeout: int) -> ClusterFacts:
    from moviectl.infra.engine import connect

    with connect(target.with_database("postgres"), connect_timeout=connect_timeout) as c:
        checksums = c.execute("SHOW data_checksums").fetchone()
        row = c.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = 'template1'"
        ).fetchone()
        dbs = c.execute(
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
        ).fetchall()
    assert checksums is not None and row is not None
    return ClusterFacts(checksums[0] == "on", row[0], row[1], row[2], [d[0] for d in dbs])


def initdb_options(facts: ClusterFacts, new_major: int) -> list[str]:
    """The new cluster as the old one is: encoding, locale and data checksums (18's initdb
    turns checksums on by default; pg_upgrade refuses a mismatch)."""
    opts = [f"--encoding={facts.encoding}", f"--lc-collate={facts.collate}"]
    opts.append(f"--lc-ctype={facts.ctype}")
    if facts.checksums:
        opts.append("--data-checksums")
    elif new_major >= 18:
        opts.append("--no-data-checksums")
    return opts


def check_traps(
    target: DbTarget, connect_timeout: int, facts: ClusterFacts, new_bin: Path, new_major: int
) -> list[Trap]:
    from moviectl.infra.engine import connect

    flag = "--data-checksums" if facts.checksums else "--no-data-checksums"
    said = "on" if facts.checksums else "off"
    traps = [
        Trap(
            "checksums",
            True,
            f"data checksums are {said} in the old cluster: the new one is made with {flag}"
            if new_major >= 18 or facts.checksums
            else "data checksums are off in both",
            "" if facts.checksums else "after --finish, offline: pg_checksums --enable",
        ),
        Trap(
            "locale",
            True,
            f"encoding {facts.encoding}, collation {facts.collate}, ctype {facts.ctype}: "
            "the new cluster is made with the same",
        ),
    ]
    have = {p.stem for p in (share_dir(new_bin) / "extension").glob("*.control")}
    missing: list[str] = []
    with connect(target.with_database("postgres"), connect_timeout=connect_timeout) as c:
        prepared = [r[0] for r in c.execute("SELECT gid FROM pg_prepared_xacts").fetchall()]
        slots = [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
    for db in facts.databases:
        with connect(target.with_database(db), connect_timeout=connect_timeout) as c:
            rows = c.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
        missing += [f"{r[0]} (in {db})" for r in rows if r[0] not in have]
    traps.append(
        Trap(
            "extensions",
            not missing,
            f"not in the PostgreSQL {new_major} binaries: {', '.join(missing)}"
            if missing
            else f"every extension in use is in the PostgreSQL {new_major} binaries",
            f"install those extensions for PostgreSQL {new_major}, or DROP EXTENSION them"
            if missing
            else "",
        )
    )
    traps.append(
        Trap(
            "prepared_transactions",
            not prepared,
            f"prepared transactions open: {', '.join(prepared)}" if prepared else "none open",
            "COMMIT PREPARED 'gid' (or ROLLBACK PREPARED 'gid') for each" if prepared else "",
        )
    )
    traps.append(
        Trap(
            "replication_slots",
            not slots,
            f"replication slots: {', '.join(slots)} (not carried over)" if slots else "none",
            "SELECT pg_drop_replication_slot('name') for each; recreate them after the upgrade"
            if slots
            else "",
        )
    )
    return traps
