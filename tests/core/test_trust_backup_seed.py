"""Issue 26, items 2, 3, 5 and 10 for `backup` and `seed`: someone else's leftovers, locks
held by another session, pg_dump's workers outliving a killed moviectl, a server that stops
mid-backup."""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from moviectl.core.backups.leftovers import this_host
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.admin import make_mark
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.settings import load_settings
from tests.conftest import (
    Cli,
    dead_pid,
    run_moviectl,
    seeded_database,
    start_moviectl,
    subprocess_env,
    wait_for,
)
from tests.ports import free_port


def _admin(target: DbTarget) -> str:
    return target.url(masked=False)


@pytest.fixture
def seeded(cli: Cli) -> Cli:
    r = cli("seed", "--sample", "300")
    assert r.exit_code == 0, r.output
    return cli


@pytest.fixture
def reader(movie_db_url: str, moviectl_admin_target: DbTarget) -> Iterator[str]:
    """The URL of a login role with pg_read_all_data only (the README's backup role)."""
    role, password = f"reader_{secrets.token_hex(4)}", secrets.token_hex(8)
    with psycopg.connect(_admin(moviectl_admin_target), autocommit=True) as c:
        if c.info.server_version < 140000:
            pytest.skip("pg_read_all_data needs PostgreSQL 14")
        c.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        c.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))
    t = moviectl_admin_target
    try:
        yield f"postgresql://{role}:{password}@{t.host}:{t.port}/{movie_db_url.rsplit('/', 1)[1]}"
    finally:
        with psycopg.connect(_admin(moviectl_admin_target), autocommit=True) as c:
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# ---- item 2: someone else's leftovers ------------------------------------------------------
def test_a_read_only_backup_keeps_its_file_beside_a_superusers_leftover(
    seeded, reader, tmp_path, moviectl_admin_target
):
    """A superuser's restore was killed mid-load (its database marked loading by a pid that
    is gone): a backup by a pg_read_all_data role succeeds, keeps its file, and leaves that
    database alone (it may not drop it; `doctor` reports it)."""
    leftover = f"movies_restore_{secrets.token_hex(4)}"
    mark = make_mark(
        "restore", state="loading", pid=dead_pid(), host=this_host(), started="2020-01-01"
    )
    admin = _admin(moviectl_admin_target)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(leftover)))
        c.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(leftover), sql.Literal(mark)
            )
        )
    try:
        r = seeded("backup", "--output", str(tmp_path), "--json", MOVIE_DATABASE_URL=reader)
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert Path(doc["path"]).exists()
        assert doc["manifest"]["row_counts"]["movies"] >= 300
        with psycopg.connect(admin, autocommit=True) as c:
            still = c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (leftover,))
            assert still.fetchone() is not None
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(leftover)))


# ---- item 3: a lock held by another session ------------------------------------------------
def _bounded(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`moviectl ARGS` with MOVIE_STALL_TIMEOUT=5, killed (a test failure) after 90 s."""
    env = subprocess_env(MOVIE_DATABASE_URL=url, MOVIE_STALL_TIMEOUT="5")
    return run_moviectl(env, *args, timeout=90)


def _names_the_blocker(err: str, pid: int) -> None:
    assert f"pid {pid}" in err and "the-forgotten-psql" in err and "since" in err, err


def test_backup_behind_a_held_table_lock_gives_up_naming_the_holder(seeded, movie_db_url, tmp_path):
    with psycopg.connect(movie_db_url, application_name="the-forgotten-psql") as c:
        c.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
        r = _bounded(movie_db_url, "backup", "--output", str(tmp_path))
        c.rollback()
        assert r.returncode == 7, r.stderr
        _names_the_blocker(r.stderr, c.info.backend_pid)
    assert list(tmp_path.iterdir()) == []  # no file, no temp file


@pytest.mark.parametrize("n", [50, 1500], ids=["orm", "copy"])
def test_seed_behind_a_held_table_lock_gives_up_and_inserts_nothing(cli, movie_db_url, n):
    with psycopg.connect(movie_db_url, application_name="the-forgotten-psql") as c:
        c.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")  # psycopg opened a BEGIN
        r = _bounded(movie_db_url, "seed", "--sample", str(n))
        c.rollback()
        assert r.returncode == 7, r.stderr
        _names_the_blocker(r.stderr, c.info.backend_pid)
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        runs = c.execute("SELECT status, requested FROM seed_runs").fetchall()
        assert runs == [("failed", n)]
        assert c.execute("SELECT count(*) FROM movies").fetchone() == (0,)


# ---- item 5: pg_dump's workers outliving a killed moviectl --------------------------------
def test_killing_moviectl_mid_parallel_backup_leaves_no_pg_dump(seeded_db_url, tmp_path):
    """`backup -F directory -j 2`, moviectl SIGKILLed while pg_dump's workers wait on the
    server (their backends paused, so none ends on its own by finishing its table): no
    pg_dump process (leader or worker) is left, re-parented to init."""
    args = ["backup", "--output", str(tmp_path), "-F", "directory", "-j", "2"]
    proc = start_moviectl(subprocess_env(MOVIE_DATABASE_URL=seeded_db_url), *args)
    dumps: list[psutil.Process] = []
    paused: list[psutil.Process] = []

    def workers_running() -> bool:
        try:  # name() too: a short-lived child (`pg_dump --version`) may be gone by then
            found = psutil.Process(proc.pid).children(recursive=True)
            dumps[:] = [p for p in found if p.name() == "pg_dump"]
        except psutil.Error:
            return False
        return len(dumps) >= 3  # the leader and its two workers

    try:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            pids: list[tuple[int]] = []

            def workers_connected() -> bool:
                # The worker processes exist a moment before their backends do.
                if not workers_running():
                    return False
                pids[:] = c.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchall()
                return len(pids) >= 3  # pg_dump's and its workers'

            assert wait_for(workers_connected, timeout=60), f"workers never connected: {pids}"
            for (pid,) in pids:
                with contextlib.suppress(psutil.Error):
                    backend = psutil.Process(pid)
                    backend.suspend()
                    paused.append(backend)
            proc.kill()
            proc.communicate(timeout=30)
            _, alive = psutil.wait_procs(dumps, timeout=20)
            assert alive == [], f"left running: {alive}"
    finally:
        for backend in paused:
            with contextlib.suppress(psutil.Error):
                backend.resume()
        proc.kill()
        proc.communicate()
        for p in dumps:
            with contextlib.suppress(psutil.Error):
                p.kill()


# ---- item 10: the server stops mid-backup -------------------------------------------------
@pytest.fixture
def stoppable(tmp_path_factory) -> Iterator[tuple[EmbeddedServer, str]]:
    """A server of this test's own (it is stopped midway) with a seeded database's URL."""
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("stoppable"), free_port(), "postgres", "pw", options=TEST_OPTIONS
    )
    srv.start()
    try:
        admin = DbTarget("127.0.0.1", srv.port, "postgres", "pw", "postgres")
        name = seeded_database(load_settings(use_dotenv=False), admin)
        yield srv, admin.with_database(name).url(masked=False)
    finally:
        srv.stop("immediate")


@pytest.mark.timeout(300)
def test_a_server_stopping_mid_backup_is_unreachable_with_its_cause(stoppable, tmp_path):
    srv, url = stoppable
    proc = start_moviectl(
        subprocess_env(MOVIE_DATABASE_URL=url), "backup", "--output", str(tmp_path)
    )

    def dumping() -> bool:
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
            return any(p.name() == "pg_dump" for p in kids) and any(tmp_path.iterdir())
        except psutil.Error:
            return False

    try:
        assert wait_for(dumping, timeout=60), proc.communicate(timeout=60)
        srv.stop("fast")
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == 3, err
    assert "shut down" in err or "lost the connection" in err or "cannot" in err, err
    assert list(tmp_path.iterdir()) == []
