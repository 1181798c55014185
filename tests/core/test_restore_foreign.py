"""`moviectl restore` of pg_dump output made elsewhere (no manifest): the server's own pg_dump
in all four formats restores, unverified; damaged or hostile input is refused before
anything is written."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest

from moviectl.infra.admin import drop_database_force
from moviectl.infra.pgtools import find_tool
from moviectl.infra.settings import load_settings
from tests.conftest import Cli, start_moviectl, subprocess_env

TABLES = ("movies", "alembic_version")


@pytest.fixture
def source(seeded_db_url):
    return seeded_db_url


@pytest.fixture
def cli(source):
    return Cli({"MOVIE_DATABASE_URL": source})


def _pg_dump(url: str, out: Path, *args: str) -> Path:
    """The server's own pg_dump (its major), as an operator ran it last year."""
    settings = load_settings(use_dotenv=False, database_url=url)
    with psycopg.connect(url) as c:
        major = c.info.server_version // 10000
    tool = find_tool("pg_dump", settings, major, prefer_major=major)
    res = subprocess.run(
        [tool.path, "-d", url, "-f", str(out), *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return out


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as c:
        names = [
            r[0]
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        return {n: c.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}


def _databases(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def _drop(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        drop_database_force(c, name)


def _url_of(url: str, name: str) -> str:
    return load_settings(use_dotenv=False, database_url=url).target(name).url(masked=False)


@pytest.mark.parametrize(
    ("flag", "name"),
    [("-Fc", "last.pgdump"), ("-Fd", "last.d"), ("-Ft", "last.tar"), ("-Fp", "last.sql")],
)
def test_the_servers_own_pg_dump_restores_in_every_format(cli, source, tmp_path, flag, name):
    path = _pg_dump(source, tmp_path / name, flag)
    r = cli("restore", str(path), "--json", *(["--jobs", "2"] if flag in ("-Fd", "-Ft") else []))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    try:
        assert doc["created"] and doc["verified"] is False and doc["manifest"] is None
        assert doc["matches_manifest"] is None and "no moviectl manifest" in doc["note"]
        assert doc["revision"] == "0002"
        assert doc["row_counts"]["movies"] > 0
        assert _counts(_url_of(source, doc["database"])) == _counts(source)
    finally:
        _drop(source, doc["database"])


def test_text_output_says_the_restore_is_unverified(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "last.pgdump", "-Fc")
    r = cli("restore", str(path), "--into", "foreign_text")
    try:
        assert r.exit_code == 0, r.output
        assert "unverified" in r.stdout and "no moviectl manifest" in r.stdout
    finally:
        _drop(source, "foreign_text")


@pytest.mark.parametrize("cut", ["half", "tail"])
def test_a_truncated_custom_file_is_refused_before_anything_is_written(cli, source, tmp_path, cut):
    path = _pg_dump(source, tmp_path / "last.pgdump", "-Fc")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-64])
    before = _databases(source)
    for args in ([], ["--into", "never_made"]):
        r = cli("restore", str(path), *args, "--json")
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert "nothing restored" in json.dumps(doc) and "truncated" in json.dumps(doc), doc
        assert _databases(source) == before


def test_a_foreign_directory_without_toc_dat_is_refused(cli, source, tmp_path):
    d = tmp_path / "not-a-dump"
    d.mkdir()
    (d / "3456.dat.gz").write_bytes(b"\x1f\x8b junk")
    before = _databases(source)
    r = cli("restore", str(d), "--into", "never_made")
    assert r.exit_code == 2, r.output
    assert "toc.dat" in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert _databases(source) == before


def test_a_file_that_is_no_pg_dump_output_is_refused(cli, source, tmp_path):
    for content, said in ((b"hello\n", "not pg_dump output"), (b"\x1f\x8b\x08rest", "gunzip")):
        path = tmp_path / "x.bin"
        path.write_bytes(content)
        r = cli("restore", str(path))
        assert r.exit_code == 2 and said in r.stderr, r.output


def test_a_plain_file_with_a_shell_escape_is_refused(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "last.sql", "-Fp")
    marker = tmp_path / "ran"
    text = path.read_text()
    path.write_text(
        text.replace("SET statement_timeout", f"\\! touch {marker}\nSET statement_timeout", 1)
    )
    before = _databases(source)
    r = cli("restore", str(path), "--into", "never_made")
    assert r.exit_code == 2, r.output
    assert not marker.exists() and _databases(source) == before


def test_a_plain_file_that_switches_databases_is_refused(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "created.sql", "-Fp", "--create")
    before = _databases(source)
    r = cli("restore", str(path))
    assert r.exit_code == 5 and "\\connect" in r.stderr and "--create" in r.stderr, r.output
    assert _databases(source) == before


def test_a_truncated_plain_file_is_refused(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "last.sql", "-Fp")
    path.write_bytes(path.read_bytes()[:-200])
    r = cli("restore", str(path), "--into", "never_made")
    assert r.exit_code == 1 and "incomplete" in r.stderr, r.output


def test_an_archive_newer_than_the_local_tools_is_refused_in_one_line(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "future.pgdump", "-Fc")
    data = bytearray(path.read_bytes())
    data[6] = 99  # the archive format's minor version, past what any pg_restore here reads
    path.write_bytes(bytes(data))
    r = cli("restore", str(path), "--into", "never_made")
    assert r.exit_code == 5, r.output
    line = r.stderr.strip().splitlines()[0]
    assert "newer than the tools here read" in line and "1.99" in line


def test_a_dump_from_a_newer_server_major_is_refused(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "new.sql", "-Fp")
    text = path.read_text()
    path.write_text(
        text.replace(
            "-- Dumped from database version ", "-- Dumped from database version 99.0 was ", 1
        )
    )
    r = cli("restore", str(path), "--into", "never_made")
    assert r.exit_code == 5 and "PostgreSQL 99" in r.stderr, r.output


@pytest.mark.parametrize("target", ["postgres", "template1"])
def test_system_databases_stay_refused_for_foreign_files(cli, source, tmp_path, target):
    path = _pg_dump(source, tmp_path / "last.pgdump", "-Fc")
    r = cli("restore", str(path), "--into", target, "--force", "--yes")
    assert r.exit_code == 5 and "refusing to restore into" in r.stderr, r.output


def test_over_a_database_it_needs_force_and_takes_a_safety_backup(cli, source, tmp_path):
    path = _pg_dump(source, tmp_path / "last.pgdump", "-Fc")
    name = psycopg.conninfo.conninfo_to_dict(source)["dbname"]
    r = cli("restore", str(path), "--into", name)
    assert r.exit_code == 5 and "--force" in r.stderr, r.output
    r = cli("restore", str(path), "--into", name, "--force", "--yes", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["safety_backup"] and doc["verified"] is False
    assert Path(doc["safety_backup"] + ".manifest.json").exists()


def test_a_fifo_is_refused_without_waiting_for_a_writer(source, tmp_path):
    # open() of a FIFO blocks until someone writes: restore must not wait on it
    fifo = tmp_path / "last.pgdump"
    os.mkfifo(fifo)
    before = _databases(source)
    child = start_moviectl(
        subprocess_env(MOVIE_DATABASE_URL=source), "restore", str(fifo), "--into", "never_made"
    )
    try:
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == 2 and "not a regular file" in err, err
    assert "Traceback" not in err and _databases(source) == before


def test_a_file_whose_name_starts_with_a_dash_is_a_file_not_an_option(
    cli, source, tmp_path, monkeypatch
):
    # "./-v.pgdump" is "-v.pgdump" to pathlib: pg_restore must not read it as options
    _pg_dump(source, tmp_path / "-v.pgdump", "-Fc")
    monkeypatch.chdir(tmp_path)
    r = cli("restore", "./-v.pgdump", "--json")
    assert r.exit_code == 0, r.output
    _drop(source, json.loads(r.stdout)["database"])


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_directory_dump_with_a_data_file_that_never_ends_is_refused(source, tmp_path, kind):
    # pg_restore would wait on the FIFO, or read /dev/zero, for ever
    d = _pg_dump(source, tmp_path / "last.d", "-Fd", "-Z0")
    victim = max((f for f in d.iterdir() if f.name != "toc.dat"), key=lambda f: f.stat().st_size)
    victim.unlink()
    if kind == "fifo":
        os.mkfifo(victim)
    else:
        victim.symlink_to("/dev/zero")
    before = _databases(source)
    child = start_moviectl(
        subprocess_env(MOVIE_DATABASE_URL=source), "restore", str(d), "--into", "never_made"
    )
    try:
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.communicate()
    assert child.returncode == 2 and victim.name in err and "not a regular file" in err, err
    assert "Traceback" not in err and _databases(source) == before
