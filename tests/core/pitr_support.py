"""Shared by the PITR tests: an embedded server of a module's own, and table facts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import Cli
from tests.core.s3server import SeaweedS3
from tests.ports import free_port

PASSWORD = "pitr-secret-pw"

# `python -c` driver of the real `moviectl pitr promote` (``start_moviectl(...,
# python=KILL_AT)``): kill -9 from inside at the moment named by ``KILL_AT`` in its env.
# Only that phase's hook is installed. Embedded and Docker: "journal" (about to write the
# journal: the WAL merged, nothing journaled), "history" (the new timeline's history file
# just linked into the archive). Docker: "swap" (journaled, the volume copy about to
# start), "created" (the helper container created, never started), "midcopy" (the helper
# ran to its end on its own), "gated" (the helper runs, its copy held until the file
# ``$KILL_GATE/go`` exists on this host), "copied" (the copy recorded as done),
# "renamed" (the restore directory set aside as `.promoted-*`, the journal not removed).
KILL_AT = """
import os, signal
phase = os.environ["KILL_AT"]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
if phase == "history":
    link = os.link
    def _link(src, dst, *a, **kw):
        link(src, dst, *a, **kw)
        if str(dst).endswith(".history"):
            die()
    os.link = _link
if phase == "renamed":
    rename = os.rename
    def _rename(src, dst, *a, **kw):
        rename(src, dst, *a, **kw)
        if os.path.basename(str(dst)).startswith(".promoted-"):
            die()
    os.rename = _rename
if phase == "swap":
    from moviectl.core.pitr import docker
    def _swap(*a, **kw):
        die()
    docker.promote = _swap
if phase in ("created", "midcopy", "gated"):
    from docker.models.containers import ContainerCollection
    run = ContainerCollection.run
    def _run(self, *a, **kw):
        if "/restored" not in str(kw.get("entrypoint")):
            return run(self, *a, **kw)
        for k in ("remove", "stderr", "stdout", "detach"):
            kw.pop(k, None)
        if phase == "created":
            self.create(*a, **kw)
            die()
        if phase == "midcopy":
            run(self, *a, **{**kw, "detach": True}).wait()
            die()
        gate = os.environ["KILL_GATE"]
        shell, flag, script = kw["entrypoint"]
        wait = "while [ ! -e /gate/go ]; do sleep 0.1; done; "
        kw["entrypoint"] = [shell, flag, wait + script]
        kw["volumes"] = {**kw["volumes"], gate: {"bind": "/gate", "mode": "ro"}}
        helper = run(self, *a, **{**kw, "detach": True})
        while helper.status not in ("running", "exited"):
            helper.reload()
        die()
    ContainerCollection.run = _run
if phase in ("journal", "copied"):
    from moviectl.core.servers import swap_journal
    write = swap_journal.write
    def _write(d, j, *a, **kw):
        if phase == "journal":
            die()
        write(d, j, *a, **kw)
        if "volume" in j:
            die()
    swap_journal.write = _write
from moviectl.cli.entry import main
main()
"""


def pitr_env(root: Path) -> dict[str, str]:
    return {
        "MOVIE_DB_BACKEND": "embedded",
        "MOVIE_DB_PORT": str(free_port()),
        "MOVIE_DATA_DIR": str(root / "data"),
        "MOVIE_BACKUP_DIR": str(root / "backups"),
        "MOVIE_DB_PASSWORD": PASSWORD,
    }


def started(root: Path) -> Iterator[Cli]:
    """`db up` + `pitr enable --yes` on a fresh embedded server; everything stopped after."""
    cli = Cli(pitr_env(root))
    r = cli("db", "up")
    assert r.exit_code == 0, r.output
    r = cli("pitr", "enable", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["restarted"] is True
    try:
        yield cli
    finally:
        for x in status(cli)["restores"]:
            cli("pitr", "discard", x["name"], "--yes")
        cli("db", "down")


def s3_with_a_base_backup(s3: SeaweedS3, root: Path, repo: str) -> Iterator[Cli]:
    """`db up` + `pitr enable --yes` with the repository in ``repo`` (an ``s3://`` URL in
    ``s3``), table ``t`` of 1000 rows and a base backup of it; restores discarded and the
    server stopped after (the s3 promote modules' ``pitr`` fixture)."""
    cli = Cli(s3.env(**pitr_env(root), MOVIE_BACKUP_REPO=repo))
    assert cli("db", "up").exit_code == 0
    r = cli("pitr", "enable", "--yes", "--json")
    assert r.exit_code == 0, r.output
    with conn(cli) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = cli("backup", "--physical", "--json")
    assert r.exit_code == 0, r.output
    try:
        yield cli
    finally:
        for x in status(cli)["restores"]:
            cli("pitr", "discard", x["name"], "--yes")
        cli("db", "down")


def status(cli: Cli) -> dict[str, Any]:
    r = cli("pitr", "status", "--json")
    assert r.exit_code in (0, 1), r.output
    return dict(json.loads(r.stdout))


def conn(cli: Cli, port: int | None = None) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host="127.0.0.1",
        port=port or int(cli.env["MOVIE_DB_PORT"]),
        user="movie",
        password=PASSWORD,
        dbname="movies",
        autocommit=True,
    )


def facts(port_or_cli: Cli | int, cli: Cli | None = None) -> tuple[int, str]:
    """(rows, md5 of every row in order) of table ``t``."""
    c = conn(cli, port_or_cli) if isinstance(port_or_cli, int) else conn(port_or_cli)  # type: ignore[arg-type]
    with c:
        row = c.execute(
            "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY i), '')) FROM t"
        ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])
