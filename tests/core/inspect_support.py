"""Servers and sessions for the `moviectl inspect` tests: a server of the module's own with
pg_stat_statements preloaded, a fresh database per test, and sessions that hold or await
locks in threads (each test creates the condition it reports)."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer, find_bin_dir
from tests.conftest import Cli, wait_for
from tests.ports import free_port

PG15 = Path("/usr/lib/postgresql/15/bin")


@dataclass
class Server:
    server: EmbeddedServer
    password: str

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        return (
            f"postgresql://{user}:{password or self.password}@127.0.0.1:"
            f"{self.server.port}/{database}"
        )

    def connect(self, database: str = "postgres", **kw: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self.url(database), autocommit=True, **kw)


@contextmanager
def stats_server(base: Path, bin_dir: Path | None = None) -> Iterator[Server]:
    password = secrets.token_urlsafe(12)
    srv = EmbeddedServer(
        base,
        free_port(),
        "postgres",
        password,
        bin_dir or find_bin_dir(),
        {**TEST_OPTIONS, "shared_preload_libraries": "pg_stat_statements"},
    )
    srv.start()
    try:
        yield Server(srv, password)
    finally:
        srv.stop("immediate")


@contextmanager
def fresh_database(server: Server) -> Iterator[tuple[str, Cli]]:
    """A database of the test's own (with pg_stat_statements), and the CLI pointed at it."""
    name = f"inspect_{secrets.token_hex(4)}"
    with server.connect() as c:
        c.execute(f"CREATE DATABASE {name}")
    with server.connect(name) as c:
        c.execute("CREATE EXTENSION pg_stat_statements")
    try:
        yield name, Cli({"MOVIE_DATABASE_URL": server.url(name)})
    finally:
        with server.connect() as c:
            c.execute(f"DROP DATABASE {name} WITH (FORCE)")


def doc(result: Any, code: int = 0) -> Any:
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


@dataclass
class Waiter:
    """A statement run in a thread (it blocks on a lock); its error, if any, once joined."""

    conn: psycopg.Connection[Any]
    sql: str
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.conn.info.backend_pid
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.conn.execute(self.sql)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(60)
        assert not self.thread.is_alive()


def waiting_on_lock(server: Server, database: str, pid: int) -> bool:
    with server.connect(database) as c:
        row = c.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


def wait_until_waiting(server: Server, database: str, pid: int) -> None:
    assert wait_for(lambda: waiting_on_lock(server, database, pid), 30)
