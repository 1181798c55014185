"""A backup directory holds input moviectl did not make: a FIFO, a directory or a huge file
under a backup's or a manifest's name is refused in one line, never read into a hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from moviectl.core.backups.objects import DOCUMENT_LIMIT
from tests.conftest import backup_json

pytestmark = pytest.mark.timeout(60)  # a blocking open would hang: fail instead


def test_a_fifo_manifest_is_listed_as_no_manifest(cli, tmp_path):
    (tmp_path / "movies-20261202T000000Z.dump").write_bytes(b"x")
    os.mkfifo(tmp_path / "movies-20261202T000000Z.dump.manifest.json")
    r = cli("backup", "list", "--dir", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    (entry,) = json.loads(r.stdout)["backups"]
    assert entry["manifest"] is False


def test_a_huge_manifest_is_not_read_whole(cli, tmp_path):
    (tmp_path / "movies-20261202T000000Z.dump").write_bytes(b"x")
    with open(tmp_path / "movies-20261202T000000Z.dump.manifest.json", "wb") as fh:
        fh.truncate(DOCUMENT_LIMIT + 1)  # sparse: no disk, but larger than any manifest
    r = cli("backup", "list", "--dir", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["backups"][0]["manifest"] is False


def test_a_fifo_in_place_of_a_backup_is_refused(cli, tmp_path):
    doc = backup_json(cli, tmp_path)
    path = Path(doc["path"])
    path.unlink()
    os.mkfifo(path)
    for args in (("backup", "verify", str(path)), ("restore", str(path), "--yes")):
        r = cli(*args, "--json")
        assert r.exit_code == 2, (args, r.output)
        assert json.loads(r.stdout)["error"]
    r = cli("backup", "list", "--dir", str(tmp_path), "--json")
    assert r.exit_code == 0, r.output


def test_a_huge_sparse_file_in_place_of_a_backup_fails_at_once(cli, tmp_path):
    """Its manifest says how large it is: a file of another size is refused before
    hours of reading zeros (verify, restore, copy)."""
    (tmp_path / "b").mkdir()
    doc = backup_json(cli, tmp_path / "b")
    path = Path(doc["path"])
    path.unlink()
    with open(path, "wb") as fh:
        fh.truncate(1 << 40)  # sparse: no disk, a terabyte of zeros to hash
    for args in (
        ("backup", "verify", str(path)),
        ("restore", str(path), "--yes"),
        ("backup", "copy", str(path), "--to", str(tmp_path / "c")),
    ):
        r = cli(*args, "--json")
        assert r.exit_code == 1, (args, r.output)
        assert "bytes, the manifest says" in r.output, (args, r.output)
    assert not list((tmp_path / "c").glob("*.dump*"))
