"""infra/admin.py, on a real server: a database is made and marked, or neither."""

from __future__ import annotations

import os
import signal
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
