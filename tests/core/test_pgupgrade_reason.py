"""pg_upgrade's failure reason read from the log it names ("Consult the last few lines of
..."): only a regular file under the new cluster's directory, where pg_upgrade writes its
logs. Its output also carries names the database's users chose (a database's name in its
progress lines): those must not make moviectl read any other file into an error message."""

from __future__ import annotations

import os
from pathlib import Path

from moviectl.core.upgrade.pgupgrade import _reason

ERROR = "pg_restore: error: could not execute query: ERROR: could not extend file"


def _consult(path: Path | str) -> list[str]:
    return [
        "Restoring database schemas in the new cluster",
        "*failure*",
        f'Consult the last few lines of "{path}" for',
        "the probable cause of the failure.",
        "Failure, exiting",
    ]


def _new_cluster(tmp_path: Path) -> Path:
    """``.upgrade/pgdata`` with pg_upgrade's log of a failed step in it."""
    pgdata = tmp_path / ".upgrade" / "pgdata"
    log = pgdata / "pg_upgrade_output.d" / "20261202T224200.000" / "log"
    log.mkdir(parents=True)
    (log / "pg_upgrade_dump_5.log").write_text(f"command: pg_restore ...\n{ERROR}\n")
    return pgdata


def test_the_reason_is_the_first_error_in_the_log_pg_upgrade_named(tmp_path: Path) -> None:
    pgdata = _new_cluster(tmp_path)
    log = next(pgdata.rglob("pg_upgrade_dump_5.log"))
    assert _reason(_consult(log), pgdata) == ERROR
    relative = log.relative_to(pgdata.parent)  # pg_upgrade runs from .upgrade/
    assert _reason(_consult(relative), pgdata) == ERROR


def test_a_named_file_outside_the_new_cluster_is_never_read(tmp_path: Path) -> None:
    """A database named 'Consult the last few lines of "/some/file"' (pg_upgrade prints
    database names as it goes): a file elsewhere, a symlink out of the new cluster, a FIFO
    (open would block) or a device (read would never end) are not read."""
    pgdata = _new_cluster(tmp_path)
    secret = tmp_path / "secret.txt"
    secret.write_text("token: error: s3cr3t\n")
    (pgdata / "pg_upgrade_output.d" / "out.log").symlink_to(secret)
    fifo = pgdata / "pg_upgrade_output.d" / "fifo.log"
    os.mkfifo(fifo)
    for named in (
        secret,
        pgdata / ".." / ".." / "secret.txt",
        pgdata / "pg_upgrade_output.d" / "out.log",
        fifo,
        "/dev/zero",
    ):
        reason = _reason(_consult(named), pgdata)
        assert "s3cr3t" not in reason and reason == "the probable cause of the failure.", named


def test_a_server_that_died_under_pg_restore_is_named_by_its_own_log(tmp_path: Path) -> None:
    """A full disk can PANIC the new server rather than fail pg_restore's query: pg_restore
    says only "server closed the connection"; the servers' log beside it says why."""
    pgdata = _new_cluster(tmp_path)
    log = next(pgdata.rglob("pg_upgrade_dump_5.log"))
    lost = "pg_restore: error: could not execute query: server closed the connection unexpectedly"
    log.write_text(f"command: pg_restore ...\n{lost}\n")
    panic = 'PANIC:  could not write to file "pg_wal/xlogtemp.7": No space left on device'
    (log.parent / "pg_upgrade_server.log").write_text(
        f"LOG:  checkpoint starting\n{panic}\nLOG:  server process was terminated\n"
        "FATAL:  the database system is in recovery mode\n"
    )
    assert _reason(_consult(log), pgdata) == f"{lost} (the new server: {' '.join(panic.split())})"
    (log.parent / "pg_upgrade_server.log").unlink()
    assert _reason(_consult(log), pgdata) == lost
