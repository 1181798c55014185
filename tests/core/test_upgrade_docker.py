"""`db upgrade` of the Docker backend, for real: a PostgreSQL 15 volume (the image of
``../shared/ci/docker-postgres``) moved to PostgreSQL 17 (``.ci/postgres-image 17``, Debian
trixie's postgresql-17, the same entrypoint) by dump and restore, with its dry run, the
rollback, the finish; kill -9 mid-way and a second copy, as docs/safety.md promises."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from moviectl.core.servers.volume_layout import image_major
from tests.conftest import ROOT, read_until, run_moviectl, start_moviectl, subprocess_env
from tests.ports import free_port

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1200)]

IMAGE_17 = "localhost/postgres:17-offline"
PASSWORD = "upgrade-secret"


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def images() -> tuple[str, str]:
    from tests.core.servers.test_docker import _engine

    base = os.environ.get("MOVIE_DB_IMAGE", "")
    required = os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1"
    if not _engine() or image_major(base) not in (15, 16):
        if required:
            pytest.fail("MOVIECTL_REQUIRE_DOCKER=1 but no engine or no 15/16 MOVIE_DB_IMAGE")
        pytest.skip("no Docker engine or no 15/16 MOVIE_DB_IMAGE (../shared/ci/docker-postgres)")
    if _docker("image", "inspect", IMAGE_17).returncode:  # .ci/run builds it; else here
        res = subprocess.run(
            [str(ROOT / ".ci/postgres-image"), "17"], capture_output=True, text=True, timeout=1200
        )
        if res.returncode:
            if required:
                pytest.fail(f".ci/postgres-image 17 failed: {res.stderr[-500:]}")
            pytest.skip(f"no {IMAGE_17}: {res.stderr[-300:]}")
    return base, IMAGE_17


class Project:
    """One Docker project (its own compose project, port, data and backup directories)."""

    def __init__(self, root: Path, image: str) -> None:
        self.project = f"mupg{secrets.token_hex(4)}"
        self.port = free_port()
        self.data = root / "data"
        self.env = {
            "MOVIE_DB_BACKEND": "docker",
            "MOVIE_DB_IMAGE": image,
            "MOVIE_DB_PORT": str(self.port),
            "MOVIE_DB_PASSWORD": PASSWORD,
            "MOVIE_COMPOSE_PROJECT": self.project,
            "MOVIE_DATA_DIR": str(self.data),
            "MOVIE_BACKUP_DIR": str(root / "backups"),
        }

    def run(self, *args: str, timeout: float = 600, **env: str) -> Any:
        r = run_moviectl(subprocess_env(**{**self.env, **env}), *args, timeout=timeout)
        assert PASSWORD not in r.stdout + r.stderr
        return r

    def json(self, *args: str, timeout: float = 600, **env: str) -> dict[str, Any]:
        r = self.run("--json", *args, timeout=timeout, **env)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return dict(json.loads(r.stdout))

    def start(self, *args: str) -> Any:
        return start_moviectl(subprocess_env(**self.env), *args)

    def facts(self) -> tuple[int, dict[str, int], str]:
        """(server major, rows per table, md5 of the movies) over the published port."""
        url = f"postgresql://movie:{PASSWORD}@127.0.0.1:{self.port}/movies?client_encoding=utf8"
        with psycopg.connect(url, connect_timeout=10) as c:
            num = c.execute("SELECT current_setting('server_version_num')::int").fetchone()
            major = int(num[0]) // 10000  # type: ignore[index]
            tables = [
                r[0]
                for r in c.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                )
            ]
            counts = {
                t: int(c.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0])  # type: ignore[index]
                for t in tables
            }
            md5 = c.execute(
                "SELECT md5(string_agg(m::text, ',' ORDER BY m.id))::bytea FROM movies m"
            ).fetchone()
            return major, counts, bytes(md5[0]).hex()  # type: ignore[index]

    def volumes(self) -> list[str]:
        out = _docker("volume", "ls", "-q", "--filter", f"name={self.project}").stdout
        return sorted(v for v in out.split() if v.startswith(self.project))

    def containers(self) -> list[str]:
        out = _docker("ps", "-a", "--format", "{{.Names}}", "--filter", f"name={self.project}")
        return sorted(out.stdout.split())

    def cleanup(self) -> None:
        for name in self.containers():
            _docker("rm", "-f", name)
        for v in self.volumes():
            _docker("volume", "rm", "-f", v)
        for net in _docker(
            "network", "ls", "-q", "--filter", f"name={self.project}"
        ).stdout.split():
            _docker("network", "rm", net)


@pytest.fixture
def site(images, tmp_path):
    p = Project(tmp_path, images[0])
    try:
        assert p.run("db", "up", timeout=180).returncode == 0
        assert p.run("migrate", timeout=180).returncode == 0
        assert p.run("seed", "--sample", "40", timeout=180).returncode == 0
        yield p
    finally:
        p.cleanup()


def readme_block() -> list[str]:
    """The command lines of the README's Docker upgrade block, comments cut."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### With the Docker backend") :]
    start = section.index("```sh\n") + 6
    block = section[start : section.index("\n```", start)]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_readme_block_dry_run_upgrade_rollback_upgrade_finish(site: Project, images) -> None:
    """The README's block line by line (its postgres:16/17 are the offline 15/17 here)."""
    old, new = images
    before = site.facts()
    assert before[0] == image_major(old) and before[1]["movies"] >= 40
    kept = f"{site.project}_pgdata-old-{before[0]}"
    upgrades = 0
    lines = [ln for ln in readme_block() if ln.startswith(("moviectl", "export"))]
    assert lines[0] == "export MOVIE_DB_IMAGE=postgres:17" and len(lines) == 7, lines
    for line in lines:
        if line.startswith("export"):
            site.env["MOVIE_DB_IMAGE"] = new
            continue
        args = line.split()[1:]
        if args == ["db", "up"]:  # the offer: exactly which upgrade to run
            r = site.run(*args)
            assert r.returncode == 5, r.stderr
            assert "moviectl db upgrade --to 17 --dry-run" in r.stderr, r.stderr
            assert site.facts() == before
            continue
        doc = site.json(*args)
        if "--dry-run" in args:
            assert doc["ok"] and doc["dry_run"] and doc["method"] == "dump", doc
            assert any("row counts" in v for v in doc["verification"]), doc
            assert any("analyze-in-stages" in v for v in doc["verification"]), doc
            assert {p["name"] for p in doc["phases"]} >= {"initdb", "restore", "verify"}
            assert site.facts() == before  # the live one only read; the throwaway gone
            assert not [n for n in site.containers() + site.volumes() if "upgdry" in n]
            secrets_dir = site.data / "secrets"  # its password copy went with it
            assert not [p.name for p in secrets_dir.glob("*upgdry*")], list(secrets_dir.iterdir())
        elif "--to" in args:
            upgrades += 1
            assert doc["ok"] and doc["from_major"] == before[0] and doc["to_major"] == 17, doc
            assert Path(doc["backup"]).is_file()  # the safety backup, named
            assert {p["name"] for p in doc["phases"]} >= {"backup", "copy_old", "restore"}
            after = site.facts()
            assert after[0] == 17 and after[1:] == before[1:]  # every table, the same rows
            assert kept in site.volumes() and "(it is set)" in doc["next_steps"][0], doc
            if upgrades == 1:  # the old image still set: `db up` says what to set instead
                r = site.run("db", "up", MOVIE_DB_IMAGE=old)
                assert r.returncode == 5, r.stderr
                assert "set MOVIE_DB_IMAGE to a PostgreSQL 17 image" in r.stderr
                r = site.run("db", "upgrade", "--to", "17", "--yes")
                assert r.returncode == 5 and "done but not finished" in r.stderr, r.stderr
                r = site.run("--json", "doctor")  # doctor says it too, with the way on
                found = json.loads(r.stdout)["findings"]
                upgrade = next(f for f in found if f["name"] == "upgrade")
                assert kept in upgrade["detail"] and "--finish" in upgrade["fix"], upgrade
        elif "--rollback" in args:
            assert doc["action"] == "rollback" and f"MOVIE_DB_IMAGE={old}" in doc["detail"]
            assert site.facts() == before and kept not in site.volumes()
        else:
            assert doc["action"] == "finish" and kept not in site.volumes(), doc
            assert site.run("db", "up").returncode == 0
            assert site.facts()[0] == 17 and site.facts()[1:] == before[1:]
    assert upgrades == 2
    assert not (site.data / f"docker-upgrade-{site.project}.json").exists()


def test_refusals_change_nothing(site: Project, images) -> None:
    before = site.facts()
    r = site.run("db", "upgrade", "--to", "14", "--yes")
    assert r.returncode == 2 and "a major never goes back" in r.stderr, r.stderr
    r = site.run("db", "upgrade", "--to", "17", "--image", "localhost/postgres:17-nowhere", "--yes")
    assert r.returncode == 9 and "not available locally" in r.stderr, r.stderr
    assert "docker pull localhost/postgres:17-nowhere" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the line and its hint
    r = site.run("db", "upgrade", "--to", "17", "--method", "link", "--yes")
    assert r.returncode == 2 and "upgrades by --method dump" in r.stderr, r.stderr
    r = site.run("db", "upgrade", "--finish", "--yes")
    assert r.returncode == 2 and "awaits --finish" in r.stderr
    garbled = site.data / f"docker-upgrade-{site.project}.json"
    garbled.write_text('{"phase": 3')  # not one moviectl wrote: which volume is whose?
    for verb in (["db", "upgrade", "--finish", "--yes"], ["db", "up"]):
        r = site.run(*verb)
        assert r.returncode == 5 and "not an upgrade state" in r.stderr, (verb, r.stderr)
    garbled.unlink()
    assert site.facts() == before and site.volumes() == [f"{site.project}_pgdata"]


@pytest.mark.parametrize("phase", ["copied to", "restoring the safety backup"])
def test_kill_9_leaves_the_old_volume_startable(site: Project, images, phase: str) -> None:
    new = images[1]
    before = site.facts()
    proc = site.start("db", "upgrade", "--to", "17", "--image", new, "--yes")
    try:
        seen = read_until(proc.stderr, "the safety backup, then", timeout=300)
        assert "the safety backup, then" in seen, seen
        second = site.run("db", "upgrade", "--to", "17", "--image", new, "--yes", timeout=60)
        assert second.returncode == 7 and "is running (pid" in second.stderr, second.stderr
        for args in (["db", "up"], ["db", "down", "--volumes", "--yes"]):  # nor these
            r = site.run(*args, timeout=60)
            assert r.returncode == 7 and "is running (pid" in r.stderr, (args, r.stderr)
        seen += read_until(proc.stderr, phase, timeout=300)
        assert phase in seen, seen
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert (site.data / f"docker-upgrade-{site.project}.json").exists()
    listed = site.json("backup", "list")
    assert listed["backups"], listed  # the safety backup is listed
    r = site.run("db", "up", "--json", timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "was undone" in json.loads(r.stdout)["detail"]
    assert site.facts() == before
    assert site.volumes() == [f"{site.project}_pgdata"]
    assert not (site.data / f"docker-upgrade-{site.project}.json").exists()
