"""The embedded backend: moviectl's own cluster under MOVIE_DATA_DIR (see ``cluster.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from moviectl.core.servers import cluster_marker, swap_journal, upgrade_state
from moviectl.core.servers.base import DownResult, ServerStatus, UpResult, probe_status, wait_ready
from moviectl.core.servers.cluster import EmbeddedServer
from moviectl.infra.errors import ConfigError
from moviectl.infra.pgtools import find_bin_dir
from moviectl.infra.settings import Settings

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def embedded_server(settings: Settings) -> EmbeddedServer:
    target = settings.target()
    if target.host not in _LOOPBACK:
        raise ConfigError(
            f"the embedded server listens on 127.0.0.1, but the database host is {target.host!r}",
            hint="set MOVIE_DB_HOST=127.0.0.1, or MOVIE_DB_BACKEND=external for a remote server",
        )
    return EmbeddedServer(
        data_dir=Path(settings.data_dir),
        port=target.port,
        superuser=target.user,
        password=target.password or "",
        bin_dir=find_bin_dir(settings.pg_bin_dir),
    )


def ensure_database(settings: Settings) -> bool:
    """Create the app database if missing (the cluster's superuser is the app user)."""
    from psycopg import sql

    from moviectl.infra.engine import connect

    target = settings.target()
    with connect(target.with_database("postgres"), connect_timeout=settings.connect_timeout) as c:
        if c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,)).fetchone():
            return False
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database)))
        return True


class EmbeddedBackend:
    name = "embedded"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = embedded_server(settings)

    def up(self, *, wait: bool = True, timeout: float = 60) -> UpResult:
        started_at = time.monotonic()
        target = self.settings.target()
        upgrade_state.refuse_if_running(self.server.data_dir)  # not a wait of minutes
        with self.server.lock():  # a second `db up` waits here, then finds it running
            swap_journal.refuse_if_interrupted(self.server.data_dir)  # never initdb a gap
            undone = upgrade_state.recover_interrupted(self.server.data_dir)  # kill -9'd upgrade
            started = self.server.start(timeout=timeout)
            created = ensure_database(self.settings)
        version = wait_ready(target, timeout, self.settings.connect_timeout) if wait else None
        detail = f"data in {self.server.pgdata}"
        if created:
            detail += f"; created database {target.database}"
        if undone:
            detail += f"; {undone}"
        return UpResult.of(
            self.name,
            target,
            already=not started,
            version=version,
            started_at=started_at,
            detail=detail,
        )

    def down(self, *, volumes: bool = False) -> DownResult:
        upgrade_state.refuse_if_running(self.server.data_dir)
        with self.server.lock():
            pgdata = self.server.pgdata
            if volumes and (pgdata.exists() or pgdata.is_symlink()):
                # before anything changes: only a cluster moviectl made is deleted
                cluster_marker.refuse_unless_ours(pgdata, self.server.ownership())
            was = self.server.stop("fast")
            removed = volumes and cluster_marker.delete_aside(self.server.data_dir, pgdata)
        return DownResult(self.name, was, removed, f"data dir {self.server.pgdata}")

    def status(self) -> ServerStatus:
        target = self.settings.target()
        st = self.server.state()
        state = "running" if st.running else ("stopped" if st.initialized else "absent")
        status = ServerStatus.of(self.name, target, state, f"data dir {self.server.pgdata}")
        if st.running:
            probe_status(status, target, self.settings.connect_timeout)
        return status

    def logs(self, *, tail: int = 50, follow: bool = False) -> Iterator[str]:
        """The last ``tail`` lines, then (``follow``) every line written after this call.

        The log's end is taken here, before the iterator is returned, so nothing written
        after ``logs()`` returns is missed however late the caller starts iterating.
        """
        old = self.server.log_tail(tail).splitlines() if tail > 0 else []
        path = self.server.logfile
        start = path.stat().st_size if follow and path.exists() else 0
        return self._lines(old, path if follow else None, start)

    @staticmethod
    def _lines(old: list[str], path: Path | None, start: int) -> Iterator[str]:
        yield from old
        if path is None:
            return
        with open(path, errors="replace") as fh:
            fh.seek(start)
            while True:
                line = fh.readline()
                if line:
                    yield line.rstrip("\n")
                else:
                    time.sleep(0.25)
