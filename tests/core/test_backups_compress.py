"""`backup --compress`: a fast default, a method and level honoured or refused in one line
per pg_dump version (15 knows only gzip levels), recorded in the manifest, and size and
time printed beside each other."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from moviectl.core.backups import compression as comp
from moviectl.infra.errors import UsageError
from moviectl.infra.pgtools import Tool, compressions, compressions_from, find_tool, wheel_bin_dir
from tests.conftest import Cli, backup_json

PG15 = Path("/usr/lib/postgresql/15/bin")


def _dir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize(
    ("value", "spec"),
    [
        ("zstd", "zstd"),
        ("zstd:3", "zstd:3"),
        ("ZSTD:level=5", "zstd:5"),
        ("lz4:1", "lz4:1"),
        ("gzip", "gzip"),
        ("gzip:9", "gzip:9"),
        ("6", "gzip:6"),
        ("0", "none"),
        ("none", "none"),
        ("none:0", "none"),
    ],
)
def test_compress_values_parse(value, spec):
    assert comp.parse(value).spec == spec


@pytest.mark.parametrize(
    "value",
    ["", "gzip:0", "gzip:10", "zstd:23", "lz4:13", "brotli", "none:3", "6:2", "gzip:x", "9" * 5000],
)
def test_bad_compress_values_are_usage_errors(value):
    with pytest.raises(UsageError):
        comp.parse(value)


def test_minus_z_as_each_pg_dump_spells_it():
    gz9, zstd = comp.Compression("gzip", 9), comp.Compression("zstd", 1)
    assert comp.z_argv(gz9, "15.18") == ["-Z", "9"]  # 15 fails on "gzip:9" itself
    assert comp.z_argv(comp.Compression("none", None), "15.18") == ["-Z", "0"]
    assert comp.z_argv(gz9, "18.6") == ["-Z", "gzip:9"]
    assert comp.z_argv(zstd, "16.4") == ["-Z", "zstd:1"]


def test_the_default_is_the_fastest_the_tool_has():
    assert comp.default("custom", frozenset({"gzip", "lz4", "zstd"})).spec == "zstd:1"
    assert comp.default("directory", frozenset({"gzip"})).spec == "gzip:1"
    assert comp.default("plain", frozenset({"gzip", "zstd"})).spec == "none"
    with pytest.raises(UsageError, match="compresses only with gzip"):
        comp.choose("zstd:3", "custom", "/x/pg_dump", "15.18", frozenset({"gzip"}))
    with pytest.raises(UsageError, match="built without lz4"):
        comp.choose("lz4", "custom", "/x/pg_dump", "18.6", frozenset({"gzip", "zstd"}))


def test_the_probe_reads_what_a_build_says():
    """The wheel's pg_dump 18 has neither lz4 nor zstd: asked for real, it says so."""
    bin_dir = wheel_bin_dir()
    assert bin_dir is not None
    from moviectl.infra.pgtools import tool_version

    tool = tool_version(str(bin_dir / "pg_dump"))
    assert tool is not None and tool.major >= 16
    assert compressions(tool) == frozenset({"gzip"})
    if (PG15 / "pg_dump").exists():  # no probe at all: 15 knows only gzip
        assert compressions(Tool(str(PG15 / "pg_dump"), 15, "15.18")) == frozenset({"gzip"})
    # a build with zstd fails to connect instead (the answer it gives the probe)
    with_zstd = {"lz4": "connection to server on socket failed", "zstd": "connection ... failed"}
    assert compressions_from(with_zstd) == frozenset({"gzip", "lz4", "zstd"})


@pytest.fixture
def seeded(cli):
    assert cli("seed", "--sample", "3000").exit_code == 0
    return cli


def test_default_backup_records_its_compression_and_prints_size_beside_time(seeded, tmp_path):
    doc = backup_json(seeded, tmp_path)
    man = json.loads(Path(doc["manifest_path"]).read_text())
    assert man["compression"] == "gzip:1"  # the wheel's pg_dump has no zstd
    assert doc["compression"] == "gzip:1" and doc["size_bytes"] == man["size_bytes"]
    assert 0 < doc["dump_seconds"] <= doc["seconds"] == man["seconds"]
    r = seeded("backup", "--output", str(tmp_path), "--compress", "gzip:6")
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.stdout.splitlines() if "(gzip:6)" in ln)
    assert "dumped in" in line and "in all" in line and "B" in line.split("(")[0]

    r = seeded("backup", "verify", doc["path"], "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"], r.output


def test_levels_are_honoured(seeded, tmp_path):
    sizes = {}
    for value in ("none", "gzip:1", "gzip:9"):
        doc = backup_json(seeded, _dir(tmp_path / value), "--compress", value)
        sizes[value] = doc["size_bytes"]
        assert doc["compression"] == value
    assert sizes["none"] > sizes["gzip:1"] > sizes["gzip:9"]
    doc = backup_json(seeded, _dir(tmp_path / "dir"), "--format", "directory", "--compress", "none")
    assert doc["compression"] == "none"
    assert not list(Path(doc["path"]).glob("*.gz"))


def test_what_the_tool_cannot_do_is_one_line_exit_2_and_nothing_written(seeded, tmp_path):
    for args, needle in (
        (["--compress", "zstd:3"], "was built without zstd"),
        (["--compress", "lz4"], "was built without lz4"),
        (["--compress", "gzip:12"], "gzip levels are 1-9"),
        (["--format", "plain", "--compress", "6"], "plain is not compressed"),
    ):
        r = seeded("--json", "backup", "--output", str(tmp_path), *args)
        assert r.exit_code == 2, (args, r.output)
        doc = json.loads(r.stdout)
        assert needle in doc["message"] and "\n" not in doc["message"], doc
        assert "Traceback" not in r.stderr
        assert list(tmp_path.iterdir()) == []


def test_pg_dump_15_gets_its_own_spelling(tmp_path):
    """pg_dump 15 knows `-Z 9`, not `-Z gzip:9`: translated; zstd refused in one line."""
    from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
    from tests.ports import free_port

    if not (PG15 / "postgres").exists():
        pytest.skip("needs Debian's postgresql-15 (.ci/run installs it)")
    srv = EmbeddedServer(tmp_path / "s", free_port(), "postgres", "pw", PG15, dict(TEST_OPTIONS))
    srv.start()
    try:
        url = f"postgresql://postgres:pw@127.0.0.1:{srv.port}/postgres"
        cli = Cli({"MOVIE_DATABASE_URL": url, "MOVIE_PG_BIN_DIR": str(PG15)})
        assert cli("migrate").exit_code == 0 and cli("seed", "--sample", "50").exit_code == 0
        doc = backup_json(cli, _dir(tmp_path / "a"))
        assert doc["manifest"]["pg_dump_version"].startswith("15")
        assert doc["compression"] == "gzip:1"
        doc = backup_json(cli, _dir(tmp_path / "b"), "--compress", "gzip:9")
        assert doc["compression"] == "gzip:9"
        assert cli("backup", "verify", doc["path"]).exit_code == 0
        r = cli("backup", "--output", str(_dir(tmp_path / "c")), "--compress", "zstd:3")
        assert r.exit_code == 2, r.output
        assert "pg_dump 15" in r.stderr and "compresses only with gzip" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 2  # the line and its hint
        with psycopg.connect(url) as c:  # the server was only read
            assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == 50
    finally:
        srv.stop("immediate")


def test_the_tool_found_for_the_test_server_is_probed_once(moviectl_settings):
    tool = find_tool("pg_dump", moviectl_settings)
    assert compressions(tool) is compressions(tool)
