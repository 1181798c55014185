"""`migrate dump`: the same schema gives the same bytes on every run and on PostgreSQL 15
and 18 (each dumped by the pg_dump moviectl picks for it), with no per-run noise."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from tests.conftest import Cli
from tests.ports import free_port

PG15 = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.timeout(300)


def _dump(cli: Cli, out: Path, *extra: str) -> tuple[int, dict[str, object]]:
    r = cli("--json", "migrate", "dump", "-o", str(out), *extra)
    return r.exit_code, json.loads(r.stdout)


def test_the_dump_is_the_same_bytes_on_every_run(cli, tmp_path):
    code, first = _dump(cli, tmp_path / "schema.sql")
    assert code == 0 and first["changed"] is True
    text = (tmp_path / "schema.sql").read_text()
    assert '"movies"' in text and '"seed_runs"' in text and '"alembic_version"' in text
    for noise in ("\\restrict", "\\unrestrict", "Dumped from", "Dumped by", "OWNER TO", "GRANT"):
        assert noise not in text, noise
    code, again = _dump(cli, tmp_path / "schema.sql")
    assert code == 0 and again["changed"] is False and again["sha256"] == first["sha256"]
    code, checked = _dump(cli, tmp_path / "schema.sql", "--check")
    assert code == 0 and checked["changed"] is False
    # a checked-in file that differs: exit 1, and --check writes nothing
    (tmp_path / "schema.sql").write_text(text + "-- edited\n")
    code, checked = _dump(cli, tmp_path / "schema.sql", "--check")
    assert code == 1 and checked["changed"] is True
    assert (tmp_path / "schema.sql").read_text().endswith("-- edited\n")
    # a missing file under --check differs too
    code, checked = _dump(cli, tmp_path / "nothing-here.sql", "--check")
    assert code == 1 and not (tmp_path / "nothing-here.sql").exists()


def test_postgresql_15_and_18_dump_the_same_bytes(cli, tmp_path):
    if not (PG15 / "postgres").exists():
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL 15 at {PG15} (.ci/run installs postgresql-15)")
        pytest.skip(f"no PostgreSQL 15 at {PG15} (apt-get install postgresql-15)")
    code, on18 = _dump(cli, tmp_path / "18.sql")
    assert code == 0, on18
    password = secrets.token_urlsafe(12)
    srv = EmbeddedServer(tmp_path / "pg15", free_port(), "postgres", password, PG15, TEST_OPTIONS)
    srv.start()
    try:
        url = f"postgresql://postgres:{password}@127.0.0.1:{srv.port}/postgres"
        old = Cli({"MOVIE_DATABASE_URL": url})
        r = old("--json", "migrate")
        assert r.exit_code == 0, r.output
        code, on15 = _dump(old, tmp_path / "15.sql")
        assert code == 0, on15
    finally:
        srv.stop("immediate")
    assert (tmp_path / "15.sql").read_text() == (tmp_path / "18.sql").read_text()
