"""infra/admin.py, on a real server: a database is made and marked, or neither."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.infra import admin


class _SigintAfterCreate:
    """A real connection that gets a Ctrl-C the moment its CREATE DATABASE has returned:
    the window between the two statements, hit every time."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def execute(self, stmt: Any, *args: Any) -> Any:
        cur = self.conn.execute(stmt, *args)
        if stmt.as_string(self.conn).startswith("CREATE DATABASE"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecode boundaries, where a handler would run
                pass
        return cur


def test_ctrl_c_between_create_and_mark_leaves_a_marked_database(moviectl_admin_target):
    name = "movies_test_" + os.urandom(8).hex()
    mark = admin.make_mark("test", owner="test_admin")
    with psycopg.connect(**moviectl_admin_target.libpq_params(), autocommit=True) as conn:
        try:
            with pytest.raises(KeyboardInterrupt):
                admin.create_database(
                    _SigintAfterCreate(conn), moviectl_admin_target, name, mark=mark
                )
            assert admin.database_comment(conn, name) == (True, mark)
        finally:
            admin.drop_database_force(conn, name)


def _template(conn: psycopg.Connection[Any], target: Any, rows: int = 1000) -> str:
    """A database with one table of ``rows`` rows, to clone."""
    name = "movies_test_" + os.urandom(8).hex()
    admin.create_database(conn, target, name)
    with psycopg.connect(**target.with_database(name).libpq_params(), autocommit=True) as t:
        t.execute(f"CREATE TABLE m AS SELECT g AS id FROM generate_series(1, {rows}) g")
    return name


def _rows(target: Any, name: str) -> int:
    with psycopg.connect(**target.with_database(name).libpq_params()) as c:
        return int(c.execute("SELECT count(*) FROM m").fetchone()[0])


def _test_cluster_18(conn: psycopg.Connection[Any]) -> None:
    if conn.info.server_version < 180000:
        pytest.skip("file_copy_method is PostgreSQL 18's")
    if conn.execute("SHOW fsync").fetchone()[0] != "off":
        pytest.skip("FILE_COPY is used only where fsync is off")


def test_a_test_cluster_clones_with_the_kernels_copy(moviectl_admin_target):
    target = moviectl_admin_target
    with psycopg.connect(**target.libpq_params(), autocommit=True) as conn:
        _test_cluster_18(conn)
        strategy = admin.clone_strategy(conn)
        assert strategy == " STRATEGY FILE_COPY"
        assert conn.execute("SHOW file_copy_method").fetchone()[0] == "clone"
        tpl, name = _template(conn, target), "movies_test_" + os.urandom(8).hex()
        try:
            admin.create_database(conn, target, name, tpl, strategy)
            assert _rows(target, name) == 1000
        finally:
            admin.drop_database_force(conn, name)
            admin.drop_database_force(conn, tpl)


def test_a_clone_the_kernel_refuses_is_made_by_the_servers_copy(moviectl_admin_target):
    """Cloning across file systems fails (EXDEV, reported as XX000): a tablespace on
    /dev/shm makes the kernel refuse for real; the clone is made with the plain copy."""
    target = moviectl_admin_target
    shm = Path("/dev/shm")
    with psycopg.connect(**target.libpq_params(), autocommit=True) as conn:
        _test_cluster_18(conn)
        data = Path(conn.execute("SHOW data_directory").fetchone()[0])
        if not shm.is_dir() or not data.is_dir() or os.stat(shm).st_dev == os.stat(data).st_dev:
            pytest.skip("needs /dev/shm on another file system than the server's data")
        if os.geteuid() != 0 and os.stat(data).st_uid != os.geteuid():
            pytest.skip("the tablespace's folder must belong to the server's user")
        place = shm / ("moviectl-ts-" + os.urandom(4).hex())
        place.mkdir()
        os.chown(place, os.stat(data).st_uid, os.stat(data).st_gid)
        ts = "ts_" + os.urandom(4).hex()
        tpl, name = _template(conn, target), "movies_test_" + os.urandom(8).hex()
        try:
            conn.execute(f"CREATE TABLESPACE {ts} LOCATION '{place}'")
            assert admin.clone_strategy(conn) == " STRATEGY FILE_COPY"
            stmt = f"CREATE DATABASE {name} TEMPLATE {tpl} TABLESPACE {ts} STRATEGY FILE_COPY"
            admin._cloned(conn, stmt)
            assert conn.execute("SHOW file_copy_method").fetchone()[0] == "copy"
            assert _rows(target, name) == 1000
        finally:
            admin.drop_database_force(conn, name)
            admin.drop_database_force(conn, tpl)
            conn.execute(f"DROP TABLESPACE IF EXISTS {ts}")
            shutil.rmtree(place, ignore_errors=True)
