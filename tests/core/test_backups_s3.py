"""Backups in a real S3-compatible bucket (SeaweedFS on 127.0.0.1): the round trip,
retention, pins, copies, encryption."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.core.s3server import SECRET_KEY, SeaweedS3

REPO = "s3://backups/movies"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def seeded(cli, s3, tmp_path):
    r = cli("seed", "--sample", "500")
    assert r.exit_code == 0, r.output
    cli.env.update(s3.env(MOVIE_BACKUP_DIR=str(tmp_path / "staging")))
    return cli


def backup(cli, *args: str, **env: str) -> dict:
    r = cli("backup", "--json", *args, **env)
    assert r.exit_code == 0, r.output
    assert SECRET_KEY not in r.output
    return dict(json.loads(r.stdout))


def name_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_round_trip_through_the_bucket(seeded, s3, tmp_path, movie_db_url):
    prefix = f"rt-{tmp_path.name}"
    repo = f"s3://backups/{prefix}"
    doc = backup(seeded, "--to", repo)
    name = name_of(doc["path"])
    assert doc["path"] == f"{repo}/{name}"
    keys = s3.keys(prefix)
    assert keys == [f"{prefix}/{name}", f"{prefix}/{name}.manifest.json"]  # no marker left
    man = json.loads(s3.read(f"{prefix}/{name}.manifest.json"))
    import hashlib

    stored = s3.read(f"{prefix}/{name}")
    assert man["sha256"] == hashlib.sha256(stored).hexdigest()
    assert man["size_bytes"] == len(stored) and man["row_counts"]["movies"] == 500

    r = seeded("backup", "list", "--repo", repo, "--json")
    assert r.exit_code == 0, r.output
    listed = json.loads(r.stdout)["backups"]
    assert [b["path"] for b in listed] == [doc["path"]] and listed[0]["manifest"]

    r = seeded("backup", "verify", name, "--repo", repo, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True and json.loads(r.stdout)["path"] == doc["path"]
    assert json.loads(s3.read(f"{prefix}/{name}.manifest.json"))["verified_at"]

    r = seeded("restore", doc["path"], "--into", "movies_from_s3", "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["matches_manifest"] and res["row_counts"]["movies"] == 500
    assert res["path"] == doc["path"]
    assert not list((tmp_path / "staging").iterdir())  # the staged copy is gone
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        from moviectl.infra.admin import drop_database_force

        drop_database_force(c, "movies_from_s3")


def test_repository_from_the_environment_and_two_at_once(seeded, s3, tmp_path):
    prefix = f"env-{tmp_path.name}"
    local = tmp_path / "local"
    doc = backup(seeded, MOVIE_BACKUP_REPO=f"{local},s3://backups/{prefix}")
    name = name_of(doc["path"])
    assert Path(doc["path"]) == local / name
    assert doc["copies"] == [f"s3://backups/{prefix}/{name}"]
    assert f"{prefix}/{name}.manifest.json" in s3.keys(prefix)
    r = seeded("backup", "list", "--json", MOVIE_BACKUP_REPO=f"s3://backups/{prefix}")
    assert [b["path"] for b in json.loads(r.stdout)["backups"]] == doc["copies"]
    # and back: the bucket's copy into another directory, checked on the way
    back = tmp_path / "back"
    back.mkdir()
    r = seeded("backup", "copy", doc["copies"][0], "--to", str(back), "--json")
    assert r.exit_code == 0, r.output
    assert (back / name).read_bytes() == (local / name).read_bytes()
    assert (back / f"{name}.manifest.json").exists()


def test_tampered_object_is_refused_before_anything_is_restored(seeded, s3, tmp_path):
    prefix = f"tamper-{tmp_path.name}"
    doc = backup(seeded, "--to", f"s3://backups/{prefix}")
    key = f"{prefix}/{name_of(doc['path'])}"
    data = bytearray(s3.read(key))
    data[len(data) // 2] ^= 0x01
    s3.write(key, bytes(data))
    r = seeded("restore", doc["path"], "--into", "never_made_s3")
    assert r.exit_code == 1 and "checksum mismatch" in r.stderr
    with psycopg.connect(seeded.env["MOVIE_DATABASE_URL"]) as c:
        assert not c.execute("SELECT 1 FROM pg_database WHERE datname = 'never_made_s3'").fetchone()
    s3.write(key, bytes(data[: len(data) // 2]))  # truncated
    r = seeded("backup", "verify", doc["path"], "--json")
    assert r.exit_code == 1 and "checksum mismatch" in r.stdout
    man = json.loads(s3.read(f"{key}.manifest.json"))
    assert man["verify_result"] == "mismatch"


def shape(doc):
    """A JSON document's keys, nested (lists by their first element): its shape."""
    if isinstance(doc, dict):
        return {k: shape(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [shape(doc[0])] if doc else []
    return None


def test_prune_in_the_bucket_as_in_a_directory(seeded, s3, tmp_path):
    prefix = f"prune-{tmp_path.name}"
    repo, local = f"s3://backups/{prefix}", str(tmp_path / "local")
    docs = {where: [backup(seeded, "--to", where) for _ in range(4)] for where in (repo, local)}
    assert shape(docs[repo][0]) == shape(docs[local][0])
    paths = {where: [d["path"] for d in ds] for where, ds in docs.items()}
    for where in (repo, local):
        r = seeded("backup", "verify", paths[where][0], "--json")
        assert r.exit_code == 0, r.output
    r = seeded("backup", "pin", paths[repo][1], "--json")
    assert r.exit_code == 0, r.output
    before = s3.keys(prefix)
    assert f"{prefix}/{name_of(paths[repo][1])}.pin" in before

    listed = {}
    for where in (repo, local):
        r = seeded("backup", "list", "--repo", where, "--json")
        listed[where] = json.loads(r.stdout)
        assert [b["path"] for b in listed[where]["backups"]] == paths[where]
    assert shape(listed[repo]) == shape(listed[local])

    plans = {}
    for where in (repo, local):
        r = seeded("backup", "prune", "--keep-last", "1", "--dry-run", "--repo", where, "--json")
        assert r.exit_code == 0, r.output
        plans[where] = json.loads(r.stdout)
    assert shape(plans[repo]) == shape(plans[local])
    assert s3.keys(prefix) == before  # a dry run deletes nothing
    p = paths[repo]
    assert plans[repo]["dry_run"] and plans[repo]["deleted"] == [p[2]]
    why = {d["path"]: d["reasons"] for d in plans[repo]["decisions"]}
    assert why == {
        p[3]: ["the newest"],
        p[2]: ["outside the policy"],
        p[1]: ["pinned"],
        p[0]: ["the newest verified backup"],
    }
    assert plans[local]["deleted"] == [paths[local][2], paths[local][1]]

    r = seeded("backup", "prune", "--keep-last", "1", "--repo", repo, "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == [p[2]], r.output
    assert not any(k.startswith(f"{prefix}/{name_of(p[2])}") for k in s3.keys(prefix))

    # GFS: one day, one week: the day's newest, the newest verified, the pinned one stay
    r = seeded(
        "backup",
        "prune",
        "--keep-daily",
        "7",
        "--keep-weekly",
        "4",
        "--repo",
        repo,
        "--yes",
        "--json",
    )
    assert r.exit_code == 0 and json.loads(r.stdout)["deleted"] == [], r.output
    r = seeded("backup", "list", "--repo", repo, "--json")
    assert [b["path"] for b in json.loads(r.stdout)["backups"]] == [p[0], p[1], p[3]]


def test_encrypted_at_rest_with_age(seeded, s3, tmp_path, movie_db_url):
    import pyrage

    key, other = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    public = str(key.to_public())
    prefix = f"age-{tmp_path.name}"
    doc = backup(seeded, "--to", f"s3://backups/{prefix}", MOVIE_BACKUP_AGE_RECIPIENTS=public)
    key_name = f"{prefix}/{name_of(doc['path'])}"
    stored = s3.read(key_name)
    assert stored.startswith(b"age-encryption.org/v1") and b"PGDMP" not in stored[:4096]
    raw = s3.read(f"{key_name}.manifest.json").decode()
    man = json.loads(raw)
    assert man["encryption"] == "age" and len(man["recipients"]) == 1
    assert public not in raw and str(key) not in raw  # fingerprints, never a key
    ident, wrong = tmp_path / "key.txt", tmp_path / "other.txt"
    ident.write_text(str(key) + "\n")
    wrong.write_text(str(other) + "\n")

    r = seeded("restore", doc["path"], "--into", "never_made_age")  # no identity
    assert r.exit_code == 2 and "MOVIE_BACKUP_AGE_IDENTITY" in r.stderr
    r = seeded(
        "restore", doc["path"], "--into", "never_made_age", MOVIE_BACKUP_AGE_IDENTITY=str(wrong)
    )
    assert r.exit_code == 1 and "cannot decrypt" in r.stderr
    with psycopg.connect(movie_db_url) as c:
        assert not c.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'never_made_age'"
        ).fetchone()
    r = seeded("backup", "verify", doc["path"], "--json", MOVIE_BACKUP_AGE_IDENTITY=str(ident))
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"] is True, r.output
    assert str(key) not in r.output


def test_disk_full_while_staging_a_restore_creates_nothing(seeded, s3, tmp_path, movie_db_url):
    import subprocess

    from tests.core.test_backups import _mount_tmpfs

    doc = backup(seeded, "--to", f"s3://backups/full-{tmp_path.name}")
    small = tmp_path / "small"
    if not _mount_tmpfs(small, "size=16k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        r = seeded("restore", doc["path"], "--into", "never_made_full", MOVIE_BACKUP_DIR=str(small))
        assert r.exit_code == 1, r.output
        assert "disk full" in r.stderr and "Traceback" not in r.output
        assert list(small.iterdir()) == []  # the staging directory is gone
    finally:
        subprocess.run(["umount", str(small)])
    with psycopg.connect(movie_db_url) as c:
        assert not c.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'never_made_full'"
        ).fetchone()
