"""The default `pg_restore -j` within the connection slots it may take: the server's, the
role's CONNECTION LIMIT, the target database's; `--jobs` as asked, within them too.

pg_restore runs through a logging wrapper (MOVIE_PG_BIN_DIR) that records its arguments
and execs the real one, so a test sees the -j it was given."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.infra.pgtools import wheel_bin_dir
from moviectl.infra.settings import parse_db_url
from tests.conftest import Cli, backup_json


@pytest.fixture
def logged(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(env naming a pg_restore that logs its arguments, the log)."""
    real = wheel_bin_dir()
    if real is None:
        pytest.skip("no embedded PostgreSQL tools")
    bin_dir, log = tmp_path / "bin", tmp_path / "pg_restore.log"
    bin_dir.mkdir()
    wrapper = bin_dir / "pg_restore"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}/pg_restore" "$@"\n')
    wrapper.chmod(0o755)
    return {"MOVIE_PG_BIN_DIR": str(bin_dir)}, log


def _load_args(log: Path) -> list[str]:
    """The arguments of the load's pg_restore (not the read-through of the archive)."""
    lines = [ln for ln in log.read_text().splitlines() if "--exit-on-error" in ln]
    assert len(lines) == 1, lines
    return lines[0].split()


def _backup(cli: Cli, tmp_path: Path) -> str:
    """A backup of the test's database, in a folder of its own (not the wrapper's log's)."""
    (tmp_path / "b").mkdir()
    return str(backup_json(cli, tmp_path / "b")["path"])


def _jobs(args: list[str]) -> int:
    return int(args[args.index("-j") + 1]) if "-j" in args else 1


@pytest.fixture
def role(movie_db_url: str) -> Iterator[Callable[[str], str]]:
    """``role("CONNECTION LIMIT 1")``: a login role that may create databases; its URL on
    the test's database. Dropped afterwards, with the databases it owns."""
    made: list[str] = []

    def make(options: str) -> str:
        name, pw = f"rj_{secrets.token_hex(4)}", f"Pw-{secrets.token_hex(8)}"
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            c.execute(f"CREATE ROLE {name} LOGIN CREATEDB PASSWORD '{pw}' {options}")
        made.append(name)
        return replace(parse_db_url(movie_db_url), user=name, password=pw).url(masked=False)

    yield make
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        for name in made:
            owned = "SELECT datname FROM pg_database WHERE datdba = %s::regrole"
            for (db,) in c.execute(owned, (name,)).fetchall():
                c.execute(f'DROP DATABASE "{db}" WITH (FORCE)')
            c.execute(f"DROP OWNED BY {name}")
            c.execute(f"DROP ROLE {name}")


def _restored(r: Any) -> dict[str, Any]:
    assert r.exit_code == 0, r.output
    doc = dict(json.loads(r.stdout))
    assert doc["verified"], doc
    return doc


@pytest.mark.parametrize("limit", [1, 2])
def test_a_role_with_a_connection_limit_restores_by_default(cli, tmp_path, role, logged, limit):
    """pg_restore -j 2 as a role of CONNECTION LIMIT 1 (or 2, one session taken by the
    application) failed "too many connections for role" where a serial restore works: the
    default counts the role's free slots."""
    env, log = logged
    path = _backup(cli, tmp_path)
    url = role(f"CONNECTION LIMIT {limit}")
    with psycopg.connect(url) if limit == 2 else contextlib.nullcontext():  # the application's
        _restored(Cli({"MOVIE_DATABASE_URL": url, **env})("--json", "restore", path))
    assert _jobs(_load_args(log)) == 1


def test_a_database_with_a_connection_limit_is_restored_into(cli, tmp_path, role, logged):
    env, log = logged
    path = _backup(cli, tmp_path)
    url = role("")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE DATABASE rj_limited CONNECTION LIMIT 1")
    r = Cli({"MOVIE_DATABASE_URL": url, **env})("--json", "restore", path, "--into", "rj_limited")
    _restored(r)
    assert _jobs(_load_args(log)) == 1


def test_a_superuser_is_not_held_to_limits_that_do_not_bind_it(cli, tmp_path, logged):
    """The superuser's own CONNECTION LIMIT binds nobody: the default -j is the cores'."""
    import os

    env, log = logged
    path = _backup(cli, tmp_path)
    url = cli.env["MOVIE_DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("ALTER ROLE CURRENT_USER CONNECTION LIMIT 1")
        try:
            r = cli("--json", "restore", path, **env)
        finally:
            c.execute("ALTER ROLE CURRENT_USER CONNECTION LIMIT -1")
        c.execute(f'DROP DATABASE "{_restored(r)["database"]}" WITH (FORCE)')
    assert _jobs(_load_args(log)) == min(os.cpu_count() or 1, 4)


def test_jobs_beyond_the_free_slots_never_fill_the_server(cli, tmp_path, logged):
    """`--jobs 200` opened 200 connections: "sorry, too many clients already", reported as
    the server gone. It is held to the free slots, as `backup --jobs` is."""
    env, log = logged
    path = _backup(cli, tmp_path)
    url = cli.env["MOVIE_DATABASE_URL"]
    doc = _restored(cli("--json", "restore", path, "--jobs", "200", **env))
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{doc["database"]}" WITH (FORCE)')
        most = int(c.execute("SHOW max_connections").fetchone()[0]) - 3
    assert 1 < _jobs(_load_args(log)) < most


def test_jobs_1_and_a_tar_archive_restore_serially(cli, tmp_path, logged):
    env, log = logged
    path = _backup(cli, tmp_path)
    url = cli.env["MOVIE_DATABASE_URL"]
    made = [_restored(cli("--json", "restore", path, "--jobs", "1", **env))["database"]]
    assert "-j" not in _load_args(log)
    log.unlink()
    tar = tmp_path / "elsewhere.tar"
    pg_dump = str(wheel_bin_dir() / "pg_dump")  # type: ignore[operator]
    subprocess.run([pg_dump, "-Ft", "-f", str(tar), "-d", url], check=True)
    r = cli("--json", "restore", str(tar), "--jobs", "3", **env)
    assert r.exit_code == 0, r.output
    made.append(json.loads(r.stdout)["database"])
    assert "-j" not in _load_args(log)
    with psycopg.connect(url, autocommit=True) as c:
        for db in made:
            c.execute(f'DROP DATABASE "{db}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """A server of this module's own with max_connections = 12: 9 slots for a role that is
    not a superuser, 2 of them the headroom ``free_job_slots`` leaves. (The superuser's
    URL, that of a role that may create databases), both on its ``postgres`` database."""
    from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
    from tests.ports import free_port

    options = {**TEST_OPTIONS, "max_connections": "12"}
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("tight"), free_port(), "postgres", "pw", options=options
    )
    srv.start()
    try:
        admin = f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute("CREATE ROLE restorer LOGIN CREATEDB PASSWORD 'pw'")
        yield admin, admin.replace("postgres:pw", "restorer:pw")
    finally:
        srv.stop("immediate")


@pytest.mark.parametrize("held", [0, 6])
def test_two_default_restores_at_once_fit_a_server_with_few_slots(
    seeded_db_url, tmp_path, tight_server, held
):
    """Both count the slots before either loads, and each takes at most what it found
    free (its own login and a headroom set aside): with 6 of the 9 slots taken by other
    clients, two -j 2 would need 4 and fail; they load serially, side by side. The restores
    run as a role that is no superuser: to it the others' sessions show no backend_type,
    and ``free_job_slots`` counted none of them (-j 2 each, "remaining connection slots
    are reserved")."""
    from tests.conftest import run_at_once

    admin, url = tight_server
    path = _backup(Cli({"MOVIE_DATABASE_URL": seeded_db_url}), tmp_path)
    others = [psycopg.connect(admin) for _ in range(held)]
    try:
        docs = run_at_once({"MOVIE_DATABASE_URL": url}, "restore", path, timeout=300)
    finally:
        for c in others:
            c.close()
    assert all(d["verified"] for d in docs), docs
    with psycopg.connect(admin, autocommit=True) as c:
        for d in docs:
            c.execute(f'DROP DATABASE "{d["database"]}" WITH (FORCE)')
