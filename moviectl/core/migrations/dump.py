"""`migrate dump`: the migrated schema as a deterministic ``schema.sql``, checked in and diffed.

``pg_dump --schema-only`` with a fixed option set (no owners, privileges, tablespaces,
security labels, publications or subscriptions: what differs between a laptop and
production, not the schema), then normalised so the same schema gives the same bytes on
every run and on PostgreSQL 15 to 18 servers:

- ``\\restrict``/``\\unrestrict`` lines (pg_dump 17.6+ writes a random key in each) go;
- the ``Dumped from/by … version`` comments go;
- ``SET`` lines only newer pg_dumps write (``transaction_timeout``) go;
- runs of blank lines become one, and the file ends with exactly one newline.

Read-only: it changes nothing in the database; it writes ``output`` (temp file, then
rename, so a killed dump never leaves half a file), or with ``check`` writes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from moviectl.infra.engine import connect
from moviectl.infra.errors import MoviectlError, UsageError
from moviectl.infra.files import write_user_file
from moviectl.infra.pgtools import child_env, find_tool, first_error, run_child
from moviectl.infra.server_facts import server_major
from moviectl.infra.settings import Settings

DUMP_OPTIONS = (
    "--schema-only",
    "--no-owner",
    "--no-privileges",
    "--no-tablespaces",
    "--no-security-labels",
    "--no-publications",
    "--no-subscriptions",
    "--quote-all-identifiers",  # the same quoting whatever the server's keyword list
)

_NOISE = re.compile(
    r"^(\\restrict .*|\\unrestrict .*|-- Dumped (from database|by pg_dump) version .*"
    r"|SET transaction_timeout = .*)$"
)


@dataclass
class DumpResult:
    database: str
    path: str
    bytes: int
    sha256: str
    changed: bool  # the file differs from what was there (--check: would differ)
    checked: bool  # --check: nothing written


def normalise(text: str) -> str:
    lines = [line for line in text.splitlines() if not _NOISE.match(line)]
    out: list[str] = []
    for line in lines:
        if line.strip() == "" and (not out or out[-1] == ""):
            continue  # one blank line at most, none at the top
        out.append(line.rstrip())
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def schema_sql(settings: Settings) -> str:
    """The normalised schema of the app database."""
    target = settings.session_target()
    with connect(target, connect_timeout=settings.connect_timeout) as conn:
        major = server_major(conn)
    tool = find_tool("pg_dump", settings, min_major=major, prefer_major=major)
    done = run_child(
        [tool.path, *DUMP_OPTIONS, "-d", target.child_conninfo()],
        env=child_env(target),
        text=True,
    )
    if done.returncode != 0:
        from moviectl.infra.engine import translate_error

        # the exit code follows the condition (permission denied: 4, the server gone: 3)
        err = translate_error(RuntimeError(done.stderr), target)
        if type(err) is MoviectlError:  # no known condition: pg_dump's own first complaint
            err.message = first_error(done.stderr).removeprefix("pg_dump: error: ")
        err.message = f"pg_dump --schema-only of {target.database} failed: {err.message}"
        raise err
    return normalise(done.stdout)


def dump(settings: Settings, output: Path, *, check: bool = False) -> DumpResult:
    import hashlib

    text = schema_sql(settings)
    data = text.encode()
    try:
        before = output.read_bytes() if output.exists() else None
    except OSError as exc:
        raise UsageError(f"cannot read {output}: {exc.strerror}") from None
    changed = before != data
    if not check and changed:
        write_user_file(output, data)  # 0600, as mkstemp made it
    return DumpResult(
        database=settings.target().database,
        path=str(output),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        changed=changed,
        checked=check,
    )
