from __future__ import annotations

import json
import shlex
import stat
import subprocess
import threading
from pathlib import Path
from urllib.parse import quote

import psutil
import psycopg
import pytest
from psycopg import sql

from moviectl.core.backups import dump as core
from moviectl.core.backups.fileio import sha256_of
from moviectl.infra.settings import load_settings
from tests.conftest import backup_json, run_at_once


@pytest.fixture
def seeded(cli):
    r = cli("seed", "--sample", "2000")
    assert r.exit_code == 0, r.output
    return cli


def test_backup_list_verify_restore_round_trip(seeded, tmp_path, movie_db_url):
    doc = backup_json(seeded, tmp_path)
    path = Path(doc["path"])
    man = json.loads(Path(doc["manifest_path"]).read_text())
    assert path.exists() and not list(tmp_path.glob(".*partial"))
    assert man["row_counts"]["movies"] == 2000 and man["alembic_revision"] == "0002"
    assert man["sha256"] == sha256_of(path) and man["size_bytes"] == path.stat().st_size
    assert man["server_major"] >= 13 and man["pg_dump_version"]
    password = load_settings(use_dotenv=False, database_url=movie_db_url).target().password
    assert password not in json.dumps(doc)

    r = seeded("backup", "list", "--dir", str(tmp_path), "--json")
    assert [b["path"] for b in json.loads(r.stdout)["backups"]] == [str(path)]

    r = seeded("backup", "verify", str(path), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    assert json.loads(Path(doc["manifest_path"]).read_text())["verified_at"]

    r = seeded("restore", str(path), "--into", "movies_copy", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["created"] and res["matches_manifest"] and res["row_counts"]["movies"] == 2000
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        from moviectl.infra.admin import drop_database_force

        drop_database_force(c, "movies_copy")


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [("directory", ["--jobs", "2"]), ("plain", []), ("custom", ["--compress", "9"])],
)
def test_other_formats(seeded, tmp_path, fmt, extra):
    doc = backup_json(seeded, tmp_path, "--format", fmt, *extra)
    r = seeded("backup", "verify", doc["path"])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_backups_are_refused(seeded, tmp_path, damage):
    path = Path(backup_json(seeded, tmp_path)["path"])
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    r = seeded("backup", "verify", str(path))
    assert r.exit_code == 1 and "checksum mismatch" in r.stdout
    r = seeded("restore", str(path), "--into", "never_made")
    assert r.exit_code == 1 and "checksum mismatch" in r.stderr
    r = seeded("--json", "testdb", "list")  # nothing was created
    assert r.exit_code == 0 and "never_made" not in r.stdout, r.output
    with psycopg.connect(seeded.env["MOVIE_DATABASE_URL"]) as c:
        assert not c.execute("SELECT 1 FROM pg_database WHERE datname = 'never_made'").fetchone()


def test_restore_refuses_to_overwrite_without_force(seeded, tmp_path, movie_db_url):
    path = Path(backup_json(seeded, tmp_path)["path"])
    db = load_settings(use_dotenv=False, database_url=movie_db_url).target().database
    r = seeded("restore", str(path), "--into", db)
    assert r.exit_code == 5 and "not empty" in r.stderr
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("DELETE FROM movies WHERE year < 2000")
    r = seeded("restore", str(path), "--into", db, "--force", "--yes", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["safety_backup"] and Path(res["safety_backup"]).exists()
    assert f"--into {db} --force" in res["undo"]
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == 2000


def test_restore_refuses_a_newer_major(seeded, tmp_path):
    doc = backup_json(seeded, tmp_path)
    mpath = Path(doc["manifest_path"])
    man = json.loads(mpath.read_text())
    man["server_major"] = 99
    mpath.write_text(json.dumps(man))
    r = seeded("restore", doc["path"])
    assert r.exit_code == 5 and "PostgreSQL 99" in r.stderr


def test_bad_output_dirs_and_missing_database(seeded, tmp_path, movie_db_url):
    r = seeded("backup", "--output", str(tmp_path / "nope"))
    assert r.exit_code == 2 and "does not exist" in r.stderr
    bad = movie_db_url.rsplit("/", 1)[0] + "/no_such_db"
    r = seeded("backup", "--output", str(tmp_path), MOVIE_DATABASE_URL=bad)
    assert r.exit_code == 4 and "no_such_db" in r.stderr
    assert list(tmp_path.iterdir()) == []
    r = seeded("restore", str(tmp_path / "missing.dump"))
    assert r.exit_code == 2 and "not found" in r.stderr


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True
    )
    return res.returncode == 0


def test_disk_full_leaves_no_partial_file(cli, tmp_path):
    assert cli("seed", "--sample", "60000").exit_code == 0
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "size=256k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = cli("backup", "--output", str(small))
        assert r.exit_code == 1, r.output
        assert "disk full" in r.stderr and "Traceback" not in r.output
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)])


def test_read_only_output_dir(cli, tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=1m,ro"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = cli("backup", "--output", str(ro))
        assert r.exit_code == 2 and "not writable" in r.stderr
    finally:
        subprocess.run(["umount", str(ro)])


def test_pg_dump_killed_midway(tmp_path, seeded_db_url):
    settings = load_settings(use_dotenv=False, database_url=seeded_db_url)
    killed = threading.Event()

    def kill_pg_dump(_: int) -> None:
        for child in psutil.Process().children(recursive=True):
            if child.name() == "pg_dump" and not killed.is_set():
                child.kill()
                killed.set()

    with pytest.raises(Exception) as err:
        core.backup(settings, output=tmp_path, progress=kill_pg_dump)
    assert killed.is_set(), "the dump finished before it could be killed"
    assert "killed" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_newest_verified(seeded, tmp_path):
    paths = []
    for _ in range(3):  # in the same second, as often as not: names stay distinct
        paths.append(backup_json(seeded, tmp_path)["path"])
    assert len(set(paths)) == 3
    assert seeded("backup", "verify", paths[0]).exit_code == 0
    r = seeded("backup", "prune", "--keep", "1", "--yes", "--json", MOVIE_BACKUP_DIR=str(tmp_path))
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["deleted"] == [paths[1]]
    assert Path(paths[0]).exists() and Path(paths[2]).exists()


def _fixed_databases(conn: psycopg.Connection) -> list[str]:
    """Every database but the test clones, which the pool's thread makes and drops meanwhile."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE datname NOT LIKE 'movies\\_test\\_%' ORDER BY 1"
    )
    return [r[0] for r in rows]


@pytest.mark.parametrize(
    "into", ["template1", "postgres", "template0", "movies_tpl_000000000000", "no_conn"]
)
@pytest.mark.parametrize("force", [False, True])
def test_restore_never_touches_protected_databases(seeded, tmp_path, movie_db_url, into, force):
    """System databases, templates, unconnectable ones: refused (5), nothing changed."""
    path = Path(backup_json(seeded, tmp_path)["path"])
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        if into == "no_conn":
            c.execute("CREATE DATABASE no_conn")
            c.execute("ALTER DATABASE no_conn WITH ALLOW_CONNECTIONS false")
        before = _fixed_databases(c)
    try:
        args = ["restore", str(path), "--into", into] + (["--force", "--yes"] if force else [])
        r = seeded(*args)
        assert r.exit_code == 5, r.output
        assert "refusing to restore" in r.stderr and "Traceback" not in r.output
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            assert _fixed_databases(c) == before
        if into == "template1":  # nothing was loaded into it either
            url = movie_db_url.rsplit("/", 1)[0] + "/template1"
            with psycopg.connect(url) as c:
                assert c.execute("SELECT to_regclass('movies')").fetchone()[0] is None
    finally:
        if into == "no_conn":
            with psycopg.connect(movie_db_url, autocommit=True) as c:
                c.execute("DROP DATABASE no_conn")


def test_concurrent_backups_all_succeed_and_all_verify(seeded, tmp_path):
    """Cron and an operator in the same second: distinct names, every one verifies."""
    docs = run_at_once(seeded.env, "backup", "--output", str(tmp_path), n=4)
    paths = [d["path"] for d in docs]
    assert len(set(paths)) == 4
    assert not list(tmp_path.glob(".*"))  # no temp file stays
    for path in paths:
        r = seeded("backup", "verify", path)
        assert r.exit_code == 0, r.output


def test_backups_are_private(seeded, tmp_path):
    """Files 0600 and the directory moviectl creates 0700: not readable by other users."""
    backup_dir = tmp_path / "made-by-moviectl"
    r = seeded("backup", "--json", MOVIE_BACKUP_DIR=str(backup_dir))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert stat.S_IMODE(backup_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(Path(doc["path"]).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(doc["manifest_path"]).stat().st_mode) == 0o600
    assert seeded("backup", "verify", doc["path"]).exit_code == 0
    assert stat.S_IMODE(Path(doc["manifest_path"]).stat().st_mode) == 0o600
    nested = tmp_path / "a" / "b" / "c"
    r = seeded("backup", "--json", "--format", "directory", MOVIE_BACKUP_DIR=str(nested))
    assert r.exit_code == 0, r.output
    for d in (tmp_path / "a", tmp_path / "a" / "b", nested):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    for f in Path(json.loads(r.stdout)["path"]).rglob("*"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


@pytest.mark.parametrize("name", ["../../escaped", "/../rooted", ".hidden", "a b;c"])
def test_a_database_name_never_becomes_a_path(cli, tmp_path, movie_db_url, name):
    out = tmp_path / "out"
    out.mkdir()
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        base = movie_db_url.rsplit("/", 1)[0]
        r = cli(
            "backup",
            "--output",
            str(out),
            "--json",
            MOVIE_DATABASE_URL=f"{base}/{quote(name, safe='')}",
        )
        assert r.exit_code == 0, r.output
        path = Path(json.loads(r.stdout)["path"])
        assert path.parent == out and not path.name.startswith(".")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    finally:
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_jobs_are_capped_by_the_servers_free_connections(seeded, tmp_path, movie_db_url):
    """`-j 99999` neither fails nor takes every connection: others can still log in."""
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            limit = int(c.execute("SHOW max_connections").fetchone()[0])
            while not stop.is_set():
                n = c.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]
                seen.append(limit - n)
                stop.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        doc = backup_json(seeded, tmp_path, "--format", "directory", "--jobs", "99999")
    finally:
        stop.set()
        watcher.join()
    assert seeded("backup", "verify", doc["path"]).exit_code == 0
    assert seen and min(seen) >= 2, min(seen)


@pytest.mark.parametrize("odd", ["x[/x]", "m[bold]x[/bold]"])
def test_markup_like_paths_print_as_themselves(seeded, tmp_path, odd):
    import shlex

    backup_dir = tmp_path / odd
    r = seeded("backup", MOVIE_BACKUP_DIR=str(backup_dir))
    assert r.exit_code == 0, r.output
    drill = next(ln for ln in r.stdout.splitlines() if "drill it:" in ln)
    path = shlex.split(drill.split("drill it:", 1)[1])[3]
    assert Path(path).parent == backup_dir and Path(path).exists()
    r = seeded("backup", "list", MOVIE_BACKUP_DIR=str(backup_dir))
    assert r.exit_code == 0 and "Traceback" not in r.output
    r = seeded("backup", "list", "--json", MOVIE_BACKUP_DIR=str(backup_dir))
    assert [b["path"] for b in json.loads(r.stdout)["backups"]] == [path]


def test_verify_on_a_read_only_backup_directory_still_reports_the_drill(seeded, tmp_path):
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "size=64m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        path = backup_json(seeded, ro)["path"]
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        r = seeded("backup", "verify", path, "--json")
        assert r.exit_code == 0, r.output
        doc = json.loads(r.stdout)
        assert doc["ok"] is True and "could not record" in doc["note"]
    finally:
        subprocess.run(["umount", str(ro)])


def test_printed_paths_are_the_paths_with_markup_or_emoji_codes_in_them(cli, tmp_path):
    """Rich would turn `:fire:` into an emoji and `[bold]` into markup: what is printed
    (the path, the drill command to paste) must be the real path."""
    odd = tmp_path / "a:fire:b[bold]c"
    odd.mkdir()
    r = cli("backup", "--output", str(odd))
    assert r.exit_code == 0, r.output
    drill = next(ln for ln in r.stdout.splitlines() if "drill it:" in ln)
    assert Path(shlex.split(drill.split("drill it:", 1)[1])[3]).parent == odd


def test_a_read_only_role_backs_up_beside_a_database_it_may_not_connect_to(
    seeded, tmp_path, movie_db_url, moviectl_admin_target
):
    """A backup role with read access only (pg_read_all_data), on a server with a database
    that revoked CONNECT from PUBLIC: the backup succeeds (listing killed runs' databases
    once asked every database's size, which that database refused)."""
    import secrets

    suffix = secrets.token_hex(4)
    role, locked, password = f"backup_{suffix}", f"locked_{suffix}", secrets.token_hex(8)
    admin = moviectl_admin_target.url(masked=False)
    with psycopg.connect(admin, autocommit=True) as c:
        if c.info.server_version < 140000:
            pytest.skip("pg_read_all_data needs PostgreSQL 14")
        c.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        c.execute(sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(role)))
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(locked)))
        c.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(locked))
        )
    try:
        database = movie_db_url.rsplit("/", 1)[1]
        url = f"postgresql://{role}:{password}@{moviectl_admin_target.host}:{moviectl_admin_target.port}/{database}"
        r = seeded("backup", "--output", str(tmp_path), "--json", MOVIE_DATABASE_URL=url)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["manifest"]["row_counts"]["movies"] >= 2000
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(locked)))
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
