"""`pitr promote` with the repository in a real S3 server (SeaweedFS) and the embedded
PostgreSQL 18: the issue's drill (rows, a noted time, a mistaken delete, restore to the
moment, promote), then life on the new timeline archived into the bucket, restores that
follow it from the bucket alone, a sibling timeline refused, and the bucket down at
promote time (refused, nothing swapped, the restored cluster still running)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, wait_for
from tests.core.pitr_support import conn, facts, pitr_env, s3_with_a_base_backup, status
from tests.core.s3server import SECRET_KEY, SeaweedS3

pytestmark = pytest.mark.timeout(900)
REPO = "s3://backups/movies"
WAL = "movies/pitr/wal/"


RO_KEY, RO_SECRET = "moviectl-read-only", "read-only-secret-7"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path / "seaweed")
    config = json.loads(server.config.read_text())  # and keys that may list and read only
    creds = [{"accessKey": RO_KEY, "secretKey": RO_SECRET}]
    config["identities"].append({"name": "ro", "credentials": creds, "actions": ["Read", "List"]})
    server.config.write_text(json.dumps(config))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pitr(s3: SeaweedS3, tmp_path: Path) -> Iterator[Cli]:
    yield from s3_with_a_base_backup(s3, tmp_path / "pitr", REPO)


def _noted(pitr: Cli) -> str:
    with conn(pitr) as c:
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        time.sleep(1.1)
    return str(row[0].isoformat())


def _restore(pitr: Cli, *args: str) -> dict[str, object]:
    r = pitr("restore", "--physical", *args, "--json")
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.stdout))


def _insert(pitr: Cli, first: int, n: int, payload: str) -> None:
    with conn(pitr) as c:
        c.execute(
            "INSERT INTO t SELECT g, %s FROM generate_series(%s::int, %s::int) g",
            (payload, first, first + n - 1),
        )


def test_drill_then_the_new_timeline_lives_in_the_bucket(pitr: Cli, s3: SeaweedS3) -> None:
    _insert(pitr, 1001, 1000, "more")
    noted = _noted(pitr)
    before = facts(pitr)
    with conn(pitr) as c:  # the mistake, and life going on after it
        c.execute("DELETE FROM t WHERE i > 500")
    _insert(pitr, 5000, 100, "later")
    mistaken = facts(pitr)
    # a sibling: another restore, to after the mistake, on its own timeline 2
    sibling = _restore(pitr, "--latest", "--into", "sibling")
    assert facts(int(str(sibling["port"])), pitr) == mistaken

    # the drill's restore and promote in one command
    args = ["--to-time", noted, "--into", "back", "--promote", "--yes"]
    r = pitr("restore", "--physical", *args, "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["restore"]["timeline"] == 2 and done["promote"]["wal_moved"] >= 1, done
    assert facts(pitr) == before
    history = f"{WAL}00000002.history"
    assert history in s3.keys(WAL)  # the new timeline's first file, in the bucket
    st = status(pitr)
    assert "s3-wal.sh" in st["archiver"]["archive_command"]
    assert SECRET_KEY not in json.dumps(st)

    # life on the new timeline: archived by the promoted server into the bucket
    _insert(pitr, 9000, 100, "after promote")
    after = facts(pitr)
    with conn(pitr) as c:
        row = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        c.execute("SELECT pg_switch_wal()")
    # that very segment (the rows above): any timeline 2 segment could be an earlier one,
    # and the restore from the bucket alone below needs this one
    assert row is not None and row[0].startswith("00000002"), row
    assert wait_for(lambda: f"{WAL}{row[0]}" in s3.keys(WAL), 120), row[0]
    shutil.rmtree(Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "base")  # the bucket alone
    followed = _restore(pitr, "--latest", "--into", "follow")
    assert followed["timeline"] == 3  # forked from timeline 2, found through its history
    assert facts(int(str(followed["port"])), pitr) == after
    assert pitr("pitr", "discard", "follow", "--yes").exit_code == 0

    # the sibling's timeline 2 is another one: refused, nothing swapped or replaced
    kept = s3.read(history)
    r = pitr("pitr", "promote", "sibling", "--yes", "--json")
    assert r.exit_code == 5 and "different contents" in r.stdout, r.output
    assert facts(pitr) == after and s3.read(history) == kept

    # a base backup of the new timeline, more rows, and the restore from it
    r = pitr("backup", "--physical", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base"]["timeline"] == 2
    _insert(pitr, 20000, 50, "after the new base")
    again = _restore(pitr, "--latest", "--into", "again")
    assert facts(int(str(again["port"])), pitr) == facts(pitr)
    st = status(pitr)
    assert st["archiver"]["failing"] is False and st["archive"]["gaps"] == [], st
    assert st["warnings"] == [], st["warnings"]  # archiving goes to the bucket, nowhere else


def test_bucket_down_at_promote_is_refused_and_nothing_moves(pitr: Cli, s3: SeaweedS3) -> None:
    _insert(pitr, 1001, 10, "x")
    want = facts(pitr)
    restored = _restore(pitr, "--latest", "--into", "down")
    _insert(pitr, 2001, 10, "lost if promoted")
    now = facts(pitr)
    pgdata = Path(pitr.env["MOVIE_DATA_DIR"])
    s3.stop()
    try:
        started = time.monotonic()
        r = pitr("pitr", "promote", "down", "--yes", "--json")
        assert r.exit_code == 3, r.output
        err = json.loads(r.stdout)
        assert "nothing was swapped" in err["message"] and "down still runs" in err["message"]
        assert time.monotonic() - started < 120
        assert facts(pitr) == now  # the server untouched
        assert not list(pgdata.glob("pgdata.before-*"))
        assert facts(int(str(restored["port"])), pitr) == want  # the restore still runs
    finally:
        s3.start()
    r = pitr("pitr", "promote", "down", "--yes", "--json")  # the bucket back: it goes through
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert f"{WAL}00000002.history" in s3.keys(WAL)


def test_docker_with_an_s3_repository_is_refused_naming_why(tmp_path: Path) -> None:
    env = pitr_env(tmp_path)
    cli = Cli({**env, "MOVIE_DB_BACKEND": "docker", "MOVIE_BACKUP_REPO": REPO})
    r = cli("pitr", "promote", "some-restore", "--yes", "--json")
    assert r.exit_code == 2, r.output
    message = json.loads(r.stdout)["message"]
    assert "embedded backend only" in message and "rclone" in message
    assert "nothing was swapped" in message


def test_an_upload_refused_mid_promote_swaps_nothing_and_a_rerun_finishes(
    pitr: Cli, s3: SeaweedS3
) -> None:
    """The bucket answers the check but refuses the upload (keys that may only read): the
    same one line saying nothing was swapped, the restored cluster stopped with its WAL;
    the env file the server archives with keeps the real keys; a re-run goes through."""
    restored = _restore(pitr, "--latest", "--into", "half")
    want = facts(int(str(restored["port"])), pitr)
    _insert(pitr, 3001, 10, "lost if promoted")
    now = facts(pitr)
    env_file = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "s3-wal" / "s3-wal.env"
    env_before = env_file.read_bytes()
    ro = Cli({**pitr.env, "AWS_ACCESS_KEY_ID": RO_KEY, "AWS_SECRET_ACCESS_KEY": RO_SECRET})
    r = ro("pitr", "promote", "half", "--yes", "--json")
    assert r.exit_code == 4, r.output  # refused credentials: the upload, after the check
    message = json.loads(r.stdout)["message"]
    assert "nothing was swapped, half is stopped, its WAL kept" in message, message
    assert RO_SECRET not in r.output
    assert facts(pitr) == now and env_file.read_bytes() == env_before
    assert f"{WAL}00000002.history" not in s3.keys(WAL)  # no timeline to follow yet
    r = pitr("pitr", "promote", "half", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert f"{WAL}00000002.history" in s3.keys(WAL)
