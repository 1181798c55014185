"""A scripted backup starts pg_dump on settings read without pydantic (infra/early_settings.py)
and settles them while it runs: what that may do before they are valid, and nothing more."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from moviectl.core.backups import dump, dump_process
from moviectl.core.backups.leftovers import this_host
from moviectl.core.backups.verify import verify
from moviectl.infra.admin import make_mark
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.early_settings import EarlySettings, read_early
from moviectl.infra.errors import ConfigError
from moviectl.infra.settings import load_settings
from tests.conftest import subprocess_env


@pytest.fixture
def started(monkeypatch) -> list[subprocess.Popen[Any]]:
    """Every pg_dump a backup starts (the real ones, recorded on their way)."""
    procs: list[subprocess.Popen[Any]] = []
    real = dump_process.popen_child

    def recording(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        proc = real(argv, **kwargs)
        procs.append(proc)
        return proc

    monkeypatch.setattr(dump_process, "popen_child", recording)
    return procs


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _plant_leftovers(url: str, out: Path) -> tuple[Path, str]:
    """What a killed backup leaves in ``out`` and a killed drill on the server."""
    pid = _dead_pid()
    partial = out / f".movies-20260101T000000Z-abcdef.dump.{pid}@{this_host()}.partial"
    partial.write_bytes(b"half a dump")
    name = f"movies_verify_planted_{pid}"
    mark = make_mark("verify", state="loading", pid=pid, host=this_host())
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        c.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(mark))
        )
    return partial, name


def _exists(url: str, name: str) -> bool:
    with psycopg.connect(url) as c:
        return bool(c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone())


def test_a_setting_pydantic_rejects_kills_the_started_dump_and_cleans_nothing(
    monkeypatch, tmp_path, seeded_db_url, started
):
    monkeypatch.setenv("MOVIE_DATABASE_URL", seeded_db_url)
    monkeypatch.setenv("MOVIE_POOL_SIZE", "x")  # read by pydantic only
    out = tmp_path / "out"
    out.mkdir()
    partial, drill = _plant_leftovers(seeded_db_url, out)
    try:
        early = read_early()
        assert early is not None
        with pytest.raises(ConfigError, match="MOVIE_POOL_SIZE"):
            dump.backup(early, output=out)
        assert len(started) == 1 and started[0].returncode is not None  # started, and dead
        assert list(out.iterdir()) == [partial]  # its own file gone, the leftover kept
        assert _exists(seeded_db_url, drill)
        monkeypatch.delenv("MOVIE_POOL_SIZE")
        result = dump.backup(read_early() or load_settings(), output=out)  # valid: cleans
        assert sorted(out.iterdir()) == sorted([Path(result.path), Path(result.manifest_path)])
        assert not _exists(seeded_db_url, drill)
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(drill)))


def test_a_scripted_backup_with_a_bad_setting_fails_as_the_full_cli_and_changes_nothing(
    tmp_path, seeded_db_url
):
    """Through the real entry point, fast path and full CLI: exit 2, the same line, and the
    output directory as it was."""
    partial, drill = _plant_leftovers(seeded_db_url, tmp_path)
    env = {"MOVIE_DATABASE_URL": seeded_db_url, "MOVIE_STALL_TIMEOUT": "0"}
    try:
        runs = [
            subprocess.run(
                [sys.executable, "-m", "moviectl", *json, "backup", "-o", str(tmp_path)],
                env=subprocess_env(**env, **extra),
                capture_output=True,
                text=True,
                timeout=120,
            )
            for json in ([], ["--json"])
            for extra in ({}, {"MOVIECTL_NO_FASTPATH": "1"})
        ]
        for fast, full in zip(runs[::2], runs[1::2], strict=True):
            assert fast.returncode == full.returncode == 2, (fast, full)
            assert (fast.stdout, fast.stderr) == (full.stdout, full.stderr)
            assert "MOVIE_STALL_TIMEOUT" in fast.stderr and "Traceback" not in fast.stderr
        assert list(tmp_path.iterdir()) == [partial]
        assert _exists(seeded_db_url, drill)
    finally:
        with psycopg.connect(seeded_db_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(drill)))


def test_settings_read_differently_start_the_backup_over_on_the_valid_ones(
    monkeypatch, tmp_path, seeded_db_url, started
):
    """A bug in the early reader costs a second start, never a backup in the wrong place."""
    right, wrong = tmp_path / "right", tmp_path / "wrong"
    right.mkdir()
    wrong.mkdir()
    monkeypatch.setenv("MOVIE_DATABASE_URL", seeded_db_url)
    monkeypatch.setenv("MOVIE_BACKUP_DIR", str(right))
    early = read_early()
    assert early is not None and early.backup_dir == right
    misread = EarlySettings(early.app, early.connect_timeout, wrong, None, "auto")
    result = dump.backup(misread)
    assert len(started) == 2 and started[0].returncode is not None
    assert list(wrong.iterdir()) == []
    assert sorted(right.iterdir()) == sorted([Path(result.path), Path(result.manifest_path)])
    checked = verify(load_settings(), Path(result.path))
    assert checked.checksum_ok and checked.counts_ok and checked.revision_ok


def test_an_output_directory_to_create_waits_for_valid_settings(
    monkeypatch, tmp_path, seeded_db_url, started
):
    """Nothing is created before the settings are valid: not even the backup directory."""
    monkeypatch.setenv("MOVIE_DATABASE_URL", seeded_db_url)
    monkeypatch.setenv("MOVIE_BACKUP_DIR", str(tmp_path / "new" / "dir"))
    monkeypatch.setenv("MOVIE_POOL_SIZE", "0")
    early = read_early()
    assert early is not None
    with pytest.raises(ConfigError, match="MOVIE_POOL_SIZE"):
        dump.backup(early)
    assert started == [] and list(tmp_path.iterdir()) == []


def test_a_misread_found_before_anything_is_made_uses_the_valid_settings(
    monkeypatch, tmp_path, seeded_db_url, started
):
    """The backup directory to create is created only once the settings are valid, and it is
    the validated one (a misread there raised SettingsMoved out of the backup: exit 10)."""
    monkeypatch.setenv("MOVIE_DATABASE_URL", seeded_db_url)
    monkeypatch.setenv("MOVIE_BACKUP_DIR", str(tmp_path / "right"))
    early = read_early()
    assert early is not None
    misread = EarlySettings(early.app, early.connect_timeout, tmp_path / "wrong", None, "auto")
    result = dump.backup(misread)
    assert len(started) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["right"]
    assert Path(result.path).parent == tmp_path / "right"


def test_a_failure_on_misread_settings_is_run_again_on_the_valid_ones(
    monkeypatch, tmp_path, seeded_db_url, capsys
):
    """Through the entry: the early read (made to misread the port, as a reader bug would)
    fails to connect before anything settles; the full CLI, which reads every setting first,
    would have made the backup, and so does the fast path."""
    import moviectl.infra.early_settings as early_settings
    from moviectl.cli import entry

    monkeypatch.setenv("MOVIE_DATABASE_URL", seeded_db_url)
    real = early_settings.read_early()
    assert real is not None
    wrong = DbTarget(real.app.host, 1, real.app.user, real.app.password, real.app.database)
    misread = EarlySettings(wrong, 1, real.backup_dir, None, "auto")
    monkeypatch.setattr(early_settings, "read_early", lambda: misread)
    assert entry._backup(str(tmp_path), json_mode=True) == 0
    doc = json.loads(capsys.readouterr().out)
    assert Path(doc["path"]).parent == tmp_path and Path(doc["path"]).exists()


def test_dotenv_and_environment_names_are_read_as_pydantic_reads_them(tmp_path, seeded_db_url):
    """Found by the attack pass: a valueless ``movie_database_url`` in .env, or an
    environment name with U+017F (long s), made the fast path back up another server (or
    fail) where the full CLI backed up the right one."""
    bad = "postgresql://nobody@127.0.0.1:1/x"  # nobody listens there
    (tmp_path / ".env").write_text(f"MOVIE_DATABASE_URL={seeded_db_url}\nmovie_database_url\n")
    out = tmp_path / "out"
    out.mkdir()
    for env in ({}, {"MOVIE_DATABA\u017fE_URL": bad}):
        runs = [
            subprocess.run(
                [sys.executable, "-m", "moviectl", "--json", "backup", "-o", str(out)],
                env=subprocess_env(**env, **extra),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            for extra in ({}, {"MOVIECTL_NO_FASTPATH": "1"})
        ]
        assert [r.returncode for r in runs] == [0, 0], runs
        assert [json.loads(r.stdout)["manifest"]["database"] for r in runs] == [
            json.loads(runs[1].stdout)["manifest"]["database"]
        ] * 2


def test_a_dotenv_that_blocks_does_not_block_the_signals(tmp_path, seeded_db_url):
    """pydantic-settings opens a .env that is a FIFO (1Password serves one) and waits for a
    writer; signals are held only while pydantic is imported, so SIGTERM still ends the
    backup (143) with its file removed and pg_dump gone, as the full CLI ends."""
    import os
    import signal

    import psutil

    from tests.conftest import wait_for

    os.mkfifo(tmp_path / ".env")
    out = tmp_path / "out"
    out.mkdir()
    for extra in ({}, {"MOVIECTL_NO_FASTPATH": "1"}):
        proc = subprocess.Popen(
            [sys.executable, "-m", "moviectl", "backup", "-o", str(out)],
            env=subprocess_env(MOVIE_DATABASE_URL=seeded_db_url, **extra),
            cwd=tmp_path,
            stderr=subprocess.PIPE,
        )
        try:
            wchan = Path(f"/proc/{proc.pid}/wchan")
            assert wait_for(lambda w=wchan: w.read_text() == "wait_for_partner", 30)  # the FIFO
            started = [c for c in psutil.Process(proc.pid).children() if c.name() == "pg_dump"]
            assert bool(started) == (not extra)  # the fast path waits with pg_dump started
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 143
            assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in started)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert list(out.iterdir()) == []


def test_a_scripted_backup_with_stderr_closed_runs_as_the_full_cli(tmp_path, seeded_db_url):
    """``2>&-``: Python starts with ``sys.stderr`` None (the fast path's check crashed)."""
    import os

    for extra in ({}, {"MOVIECTL_NO_FASTPATH": "1"}):
        out = tmp_path / ("fast" if not extra else "full")
        out.mkdir()
        r = subprocess.run(
            [sys.executable, "-m", "moviectl", "--json", "backup", "-o", str(out)],
            env=subprocess_env(MOVIE_DATABASE_URL=seeded_db_url, **extra),
            stdout=subprocess.PIPE,
            preexec_fn=lambda: os.close(2),
            timeout=120,
        )
        assert r.returncode == 0
        assert Path(json.loads(r.stdout)["path"]).exists()
