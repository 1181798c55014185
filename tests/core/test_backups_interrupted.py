"""Backups, restores and drills that fail or are killed: what they may leave, and who cleans it."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.conftest import Cli, backup_json, subprocess_env, wait_for


@pytest.fixture
def seeded(seeded_db_url):
    """The CLI on a database of 200,000 movies (a dump long enough to interrupt)."""
    return Cli({"MOVIE_DATABASE_URL": seeded_db_url})


def _databases(url: str, like: str) -> list[str]:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (like,))
        return [r[0] for r in rows]


def _tools_of(pid: int) -> list[psutil.Process]:
    try:
        return [
            p
            for p in psutil.Process(pid).children(recursive=True)
            if p.name() in ("pg_dump", "pg_restore", "psql")
        ]
    except psutil.NoSuchProcess:
        return []


def _no_tool_reading(path: Path) -> bool:
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("pg_dump", "pg_restore", "psql") and any(
            str(path) in a for a in p.info["cmdline"] or []
        ):
            return False
    return True


def test_a_failed_restore_into_a_new_database_leaves_nothing(seeded, tmp_path, seeded_db_url):
    doc = backup_json(seeded, tmp_path, "--format", "plain")
    path, mpath = Path(doc["path"]), Path(doc["manifest_path"])
    with open(path, "a") as fh:  # a valid dump that fails at its very end
        fh.write("\nSELECT * FROM this_table_is_not_there;\n")
    man = json.loads(mpath.read_text())
    man["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    man["size_bytes"] = path.stat().st_size  # a809c51: the size is checked before the hash
    mpath.write_text(json.dumps(man))
    r = seeded("restore", str(path), "--into", "half_done")
    assert r.exit_code == 1, r.output
    assert 'relation "this_table_is_not_there" does not exist' in r.stderr
    assert _databases(seeded_db_url, "half_done") == []


def test_kill_9_during_backup_leaves_a_partial_the_next_run_removes(seeded, tmp_path):
    cmd = [sys.executable, "-m", "moviectl", "backup", "--output", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=subprocess_env(**seeded.env), stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _tools_of(proc.pid)), "pg_dump never started"
        tools = _tools_of(proc.pid)
        proc.kill()
        proc.wait(timeout=30)
        assert wait_for(lambda: not any(t.is_running() for t in tools), 10), "orphan pg_dump"
    finally:
        if proc.poll() is None:
            proc.kill()
    partial = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(partial) == 1
    r = seeded("doctor", "--json", MOVIE_BACKUP_DIR=str(tmp_path))
    found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
    assert found["leftovers"]["status"] == "warn", found["leftovers"]
    doc = backup_json(seeded, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [Path(doc["path"]).name, Path(doc["manifest_path"]).name]
    )


@pytest.mark.parametrize("json_mode", [[], ["--json"]])
def test_sigterm_during_backup_cleans_up_and_exits_143(seeded, tmp_path, json_mode):
    cmd = [sys.executable, "-m", "moviectl", *json_mode, "backup", "--output", str(tmp_path)]
    env = subprocess_env(**seeded.env)
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert wait_for(lambda: _tools_of(proc.pid)), "pg_dump never started"
        tools = _tools_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert wait_for(lambda: not any(t.is_running() for t in tools), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(tmp_path.iterdir()) == []
    _said_stopped(out, err, json_mode, "terminated", 143)


def test_kill_9_during_a_drill_leaves_a_marked_database_the_next_run_drops(
    seeded, tmp_path, seeded_db_url
):
    path = Path(backup_json(seeded, tmp_path)["path"])
    cmd = [sys.executable, "-m", "moviectl", "backup", "verify", str(path)]
    proc = subprocess.Popen(cmd, env=subprocess_env(**seeded.env), stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: _tools_of(proc.pid)), "pg_restore never started"
        proc.kill()
        proc.wait(timeout=30)
        assert wait_for(lambda: _no_tool_reading(path), 10), "orphan pg_restore"
    finally:
        if proc.poll() is None:
            proc.kill()
    left = _databases(seeded_db_url, "movies_verify_%")
    assert len(left) == 1
    r = seeded("doctor", "--json")
    leftovers = {f["name"]: f for f in json.loads(r.stdout)["findings"]}["leftovers"]
    assert left[0] in leftovers["detail"]
    r = seeded("backup", "verify", str(path))
    assert r.exit_code == 0, r.output
    assert _databases(seeded_db_url, "movies_verify_%") == []


@pytest.mark.parametrize("json_mode", [[], ["--json"]])
def test_ctrl_c_during_backup_cleans_up_and_exits_130(seeded, tmp_path, seeded_db_url, json_mode):
    # pg_dump is held mid-run (it waits for its lock on movies), so Ctrl-C lands during the
    # dump however fast the machine is
    holder = psycopg.connect(seeded_db_url)
    holder.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
    cmd = [sys.executable, "-m", "moviectl", *json_mode, "backup", "--output", str(tmp_path)]
    proc = subprocess.Popen(
        cmd, env=subprocess_env(**seeded.env), stderr=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert wait_for(lambda: _dump_waits_for_a_lock(seeded_db_url)), "pg_dump never waited"
        tools = _tools_of(proc.pid)
        assert [t.name() for t in tools] == ["pg_dump"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert wait_for(lambda: not any(t.is_running() for t in tools), 10)
    finally:
        if proc.poll() is None:
            proc.kill()
        holder.close()
    assert list(tmp_path.iterdir()) == []
    _said_stopped(out, err, json_mode, "interrupted", 130)


def _said_stopped(out: bytes, err: bytes, json_mode: list[str], word: str, code: int) -> None:
    """stderr ends with ``word``; under --json stdout is exactly one JSON document saying so."""
    assert err.decode().strip().endswith(word)
    if json_mode:
        assert json.loads(out) == {
            "ok": False,
            "error": word.capitalize(),
            "message": word,
            "hint": None,
            "exit_code": code,
        }
    else:
        assert out == b""


def _dump_waits_for_a_lock(url: str) -> bool:
    with psycopg.connect(url) as c:
        row = c.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query LIKE 'LOCK TABLE %' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        return row is not None


def test_printed_commands_are_shell_quoted_and_undo_runs_as_printed(
    seeded, tmp_path, seeded_db_url
):
    import shlex

    odd = tmp_path / 'it\'s a "dir" $HOME'
    odd.mkdir()
    r = seeded("backup", "--output", str(odd))
    assert r.exit_code == 0, r.output
    drill = next(ln for ln in r.stdout.splitlines() if "drill it:" in ln)
    argv = shlex.split(drill.split("drill it:", 1)[1])
    assert argv[:3] == ["moviectl", "backup", "verify"] and Path(argv[3]).parent == odd
    db = seeded_db_url.rsplit("/", 1)[1].split("?")[0]
    r = seeded("restore", argv[3], "--into", db, "--force", "--yes", "--json")
    assert r.exit_code == 0, r.output
    undo = shlex.split(json.loads(r.stdout)["undo"])
    assert undo[-1] == "--yes" and Path(undo[2]).exists()
    r = seeded(*undo[1:])  # exactly as printed, without the program name
    assert r.exit_code == 0, r.output


def test_a_failing_restore_through_sql_reports_psqls_first_error(tmp_path):
    """Into PostgreSQL < 17 a newer pg_restore goes through psql; its failure is one clear
    line, not a silent exit (a broken pipe used to swallow it), and nothing stays."""
    from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
    from tests.ports import free_port

    pg15 = Path("/usr/lib/postgresql/15/bin")
    if not (pg15 / "postgres").exists():
        pytest.skip("needs Debian's postgresql-15 (.ci/run installs it)")
    srv = EmbeddedServer(tmp_path / "s", free_port(), "postgres", "pw", pg15, dict(TEST_OPTIONS))
    srv.start()
    try:
        url = f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"
        cli = Cli({"MOVIE_DATABASE_URL": url})
        assert cli("migrate").exit_code == 0 and cli("seed", "--sample", "50").exit_code == 0
        path = Path(backup_json(cli, tmp_path)["path"])
        tpl = f"postgresql://postgres:pw@127.0.0.1:{srv.port}/template1"
        with psycopg.connect(tpl, autocommit=True) as c:  # every new database inherits it
            c.execute("CREATE TABLE movies (x int)")
        r = cli("restore", str(path), "--into", "fresh")
        assert r.exit_code == 1, r.output
        assert 'relation "movies" already exists' in r.stderr
        assert _databases(url, "fresh") == []
    finally:
        srv.stop("immediate")


def test_restore_refuses_a_database_with_objects_outside_public(seeded, tmp_path, seeded_db_url):
    path = Path(backup_json(seeded, tmp_path)["path"])
    base = seeded_db_url.rsplit("/", 1)[0]
    with psycopg.connect(seeded_db_url, autocommit=True) as c:
        c.execute("CREATE DATABASE theirs")
    try:
        with psycopg.connect(f"{base}/theirs", autocommit=True) as c:
            c.execute("CREATE SCHEMA app; CREATE TABLE app.keep (id int)")
            c.execute("INSERT INTO app.keep VALUES (42)")
        r = seeded("restore", str(path), "--into", "theirs")
        assert r.exit_code == 5 and "not empty" in r.stderr, r.output
        with psycopg.connect(f"{base}/theirs") as c:
            assert c.execute("SELECT to_regclass('public.movies')").fetchone()[0] is None
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            c.execute("DROP DATABASE theirs WITH (FORCE)")


def test_every_run_cleans_every_kind_of_leftover(seeded, tmp_path, seeded_db_url):
    """A killed backup's partial goes with the next restore; a killed drill's database goes
    with the next backup (doctor promises "the next backup / restore / verify")."""
    good = Path(backup_json(seeded, tmp_path)["path"])
    cmd = [sys.executable, "-m", "moviectl", "backup", "--output", str(tmp_path)]
    proc = subprocess.Popen(cmd, env=subprocess_env(**seeded.env), stderr=subprocess.PIPE)
    assert wait_for(lambda: _tools_of(proc.pid)), "pg_dump never started"
    proc.kill()
    proc.wait(timeout=30)
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    r = seeded("restore", str(good), "--into", "cleaned_up")
    assert r.exit_code == 0, r.output
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    cmd = [sys.executable, "-m", "moviectl", "backup", "verify", str(good)]
    proc = subprocess.Popen(cmd, env=subprocess_env(**seeded.env), stderr=subprocess.PIPE)
    assert wait_for(lambda: _tools_of(proc.pid)), "pg_restore never started"
    proc.kill()
    proc.wait(timeout=30)
    assert len(_databases(seeded_db_url, "movies_verify_%")) == 1
    backup_json(seeded, tmp_path)
    assert _databases(seeded_db_url, "movies_verify_%") == []
    with psycopg.connect(seeded_db_url, autocommit=True) as c:
        c.execute("DROP DATABASE cleaned_up WITH (FORCE)")


def test_when_only_a_newer_pg_dump_exists_the_manifest_says_who_can_read_it(tmp_path, monkeypatch):
    """PostgreSQL 15 with only pg_dump 18 at hand: the backup says so, records that
    pg_restore 18 is needed, and its own drill picks one (plain dumps are filtered)."""
    import moviectl.infra.pgtools as pgtools
    from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
    from tests.ports import free_port

    pg15 = Path("/usr/lib/postgresql/15/bin")
    if not (pg15 / "postgres").exists():
        pytest.skip("needs Debian's postgresql-15 (.ci/run installs it)")
    real = pgtools.candidates
    monkeypatch.setattr(  # only the wheel's (18) tools
        pgtools,
        "candidates",
        lambda name, s: [
            c for c in real(name, s) if "/15/" not in c and not c.startswith("/usr/bin")
        ],
    )
    srv = EmbeddedServer(tmp_path / "s", free_port(), "postgres", "pw", pg15, dict(TEST_OPTIONS))
    srv.start()
    try:
        cli = Cli({"MOVIE_DATABASE_URL": f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"})
        assert cli("migrate").exit_code == 0 and cli("seed", "--sample", "50").exit_code == 0
        for fmt in ("custom", "plain"):
            r = cli("backup", "--output", str(tmp_path), "--format", fmt, "--json")
            assert r.exit_code == 0, r.output
            man = json.loads(r.stdout)["manifest"]
            assert man["pg_dump_version"].startswith("18") and "pg_dump 18" in man["note"]
            assert man["pg_restore_min_major"] == (18 if fmt == "custom" else None)
            r = cli("backup", "verify", json.loads(r.stdout)["path"])
            assert r.exit_code == 0, r.output
    finally:
        srv.stop("immediate")
