"""`db down --volumes` on the embedded backend deletes only a cluster moviectl made."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess

from moviectl.core.servers.cluster import SYSTEM_USER, _ensure_traversable, ensure_system_user
from moviectl.core.servers.cluster_marker import MARKER
from moviectl.infra.pgtools import find_bin_dir
from tests.conftest import Cli


def _said(r) -> str:  # type: ignore[no-untyped-def]
    """The output with Rich's line wrapping undone."""
    return " ".join(r.output.split())


def _names_dir(r, path) -> bool:  # type: ignore[no-untyped-def]
    return str(path) in "".join(r.output.split())


def _pgdata(cli: Cli):
    from pathlib import Path

    return Path(cli.env["MOVIE_DATA_DIR"]) / "pgdata"


def test_a_folder_of_notes_where_the_cluster_would_be_is_refused_and_kept(emb):
    notes = _pgdata(emb) / "notes"
    notes.mkdir(parents=True)
    (notes / "todo.txt").write_text("do not lose me\n")
    r = emb("db", "down", "--volumes", "--yes")
    assert r.exit_code == 5, r.output
    assert _names_dir(r, _pgdata(emb)) and "notes/" in _said(r)
    assert "no PostgreSQL cluster" in _said(r)
    assert (notes / "todo.txt").read_text() == "do not lose me\n"


def test_a_cluster_moviectl_made_is_marked_and_deleted(emb):
    assert emb("db", "up").exit_code == 0
    doc = json.loads((_pgdata(emb) / MARKER).read_text())
    assert doc["made_by"] == "moviectl" and doc["system_identifier"].isdigit()
    r = emb("db", "down", "--volumes", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["removed_data"] is True
    assert not _pgdata(emb).exists()
    assert not list(_pgdata(emb).parent.glob(".deleting-*"))


def _foreign_initdb(pgdata) -> None:
    """A PostgreSQL data directory made by initdb itself, not by moviectl."""
    kwargs: dict = {}
    if os.geteuid() == 0:  # initdb refuses root, as the server does
        ensure_system_user()
        entry = pwd.getpwnam(SYSTEM_USER)
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(pgdata.parent, 0o777)
        _ensure_traversable(pgdata.parent)
        kwargs = {"user": entry.pw_uid, "group": entry.pw_gid, "cwd": str(pgdata.parent)}
    res = subprocess.run(
        [str(find_bin_dir(None) / "initdb"), "-D", str(pgdata), "-U", "someone", "--no-sync"],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )
    assert res.returncode == 0, res.stderr


def test_a_postgresql_data_directory_moviectl_did_not_make_is_refused(emb):
    _foreign_initdb(_pgdata(emb))
    before = sorted(p.name for p in _pgdata(emb).iterdir())
    r = emb("db", "down", "--volumes", "--yes")
    assert r.exit_code == 5, r.output
    assert "did not make" in _said(r) and _names_dir(r, _pgdata(emb))
    assert sorted(p.name for p in _pgdata(emb).iterdir()) == before


def test_another_clusters_marker_does_not_make_it_ours(emb):
    assert emb("db", "up").exit_code == 0
    assert emb("db", "down").exit_code == 0
    marker = (_pgdata(emb) / MARKER).read_text()
    shutil.rmtree(_pgdata(emb))
    _foreign_initdb(_pgdata(emb))
    (_pgdata(emb) / MARKER).write_text(marker)  # copied from moviectl's cluster: its id
    r = emb("db", "down", "--volumes", "--yes")
    assert r.exit_code == 5, r.output
    assert "another cluster's marker" in _said(r) and (_pgdata(emb) / "PG_VERSION").exists()


def test_a_cluster_made_before_markers_is_recognised_and_marked_on_up(emb):
    """Before the marker, moviectl's clusters carry its include line and were started by
    the wheel's postgres: those are accepted, and the next `db up` marks them."""
    assert emb("db", "up").exit_code == 0
    assert emb("db", "down").exit_code == 0
    (_pgdata(emb) / MARKER).unlink()  # as an older moviectl left it
    assert emb("db", "up").exit_code == 0
    assert (_pgdata(emb) / MARKER).is_file()
    (_pgdata(emb) / MARKER).unlink()
    r = emb("db", "down", "--volumes", "--yes")
    assert r.exit_code == 0, r.output
    assert not _pgdata(emb).exists()
