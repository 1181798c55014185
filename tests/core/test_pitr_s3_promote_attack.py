"""`pitr promote` into an ``s3://`` repository, attacked on real servers (embedded
PostgreSQL 18, SeaweedFS): kill -9 at each phase (mid-upload, between the upload and the
swap, once the conf is rewritten) is finished by running the promote again and the promoted
server archives into the bucket afterwards; a hostile object of a WAL file's name (larger
than any document) is refused as different contents; a stalled endpoint mid-upload is a
bounded wait; no key in the files, the argv or the server's log."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env, wait_for
from tests.core.pitr_support import conn, facts, s3_with_a_base_backup
from tests.core.s3server import SECRET_KEY, SeaweedS3

pytestmark = pytest.mark.timeout(900)
REPO = "s3://backups/movies"
WAL = "movies/pitr/wal/"


@pytest.fixture
def pitr(s3: SeaweedS3, tmp_path: Path) -> Iterator[Cli]:  # s3: tests/core/conftest.py's
    yield from s3_with_a_base_backup(s3, tmp_path / "pitr", REPO)


_MORE = "INSERT INTO t SELECT m + g, %s FROM (SELECT max(i) m FROM t) x, generate_series(1, 100) g"


def _restored(pitr: Cli, name: str) -> object:
    with conn(pitr) as c:
        c.execute(_MORE, ("kept",))
    r = pitr("restore", "--physical", "--latest", "--into", name, "--json")
    assert r.exit_code == 0, r.output
    want = facts(int(json.loads(r.stdout)["port"]), pitr)
    with conn(pitr) as c:
        c.execute(_MORE, ("lost",))
    return want


def _archives_into_the_bucket(pitr: Cli, s3: SeaweedS3) -> None:
    """A new segment of the promoted server's timeline reaches the bucket; no failure."""
    with conn(pitr) as c:
        c.execute("INSERT INTO t SELECT g, 'after' FROM generate_series(9001, 9100) g")
        row = c.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        c.execute("SELECT pg_switch_wal()")
    assert row is not None
    assert wait_for(lambda: f"{WAL}{row[0]}" in s3.keys(WAL), 120), row[0]
    with conn(pitr) as c:
        stats = c.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()
    assert stats is not None and stats[0] == 0, stats


_KILL_AT = """
import os, signal, sys
phase = os.environ["KILL_AT"]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
from moviectl.core.backups import s3
from moviectl.core.pitr import promote
from moviectl.core.servers import swap_journal
put = s3.S3Repository.put
def _put(self, name, source):
    if phase == "history" and name.endswith(".history"):
        die()  # every WAL file in the bucket but the history file
    n = put(self, name, source)
    if phase == "upload" and "/wal" in self.url:
        die()  # one WAL file in the bucket, the rest (the history file) not
    return n
s3.S3Repository.put = _put
write = swap_journal.write
def _write(*a, **kw):
    if phase == "journal":
        die()  # uploaded, nothing journaled or swapped
    return write(*a, **kw)
swap_journal.write = _write
conf = promote.write_conf
def _conf(*a, **kw):
    r = conf(*a, **kw)
    if phase == "conf":
        die()  # swapped in, the s3 conf written, not started
    return r
promote.write_conf = _conf
from moviectl.cli.entry import main
main()
"""


@pytest.mark.parametrize("phase", ["upload", "journal", "conf"])
def test_kill_9_at_each_phase_is_finished_by_running_promote_again(
    pitr: Cli, s3: SeaweedS3, phase: str
) -> None:
    want = _restored(pitr, "k9")
    now = facts(pitr)
    env = subprocess_env(**pitr.env, KILL_AT=phase)
    proc = start_moviectl(env, "pitr", "promote", "k9", "--yes", python=_KILL_AT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    if phase != "conf":  # nothing swapped: the server answers with its own rows
        assert facts(pitr) == now
        assert not (data / "promoting.json").exists()
    if phase == "upload":  # no timeline for a restore to follow yet
        assert f"{WAL}00000002.history" not in s3.keys(WAL)
    r = pitr("pitr", "promote", "k9", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert f"{WAL}00000002.history" in s3.keys(WAL)
    _archives_into_the_bucket(pitr, s3)


def test_a_huge_object_of_a_wal_files_name_is_refused_as_different(
    pitr: Cli, s3: SeaweedS3
) -> None:
    """Someone else's (huge) history file of the restored cluster's timeline: exit 5
    as for any different bytes, never downloaded whole, nothing swapped or uploaded."""
    _restored(pitr, "huge")
    now = facts(pitr)
    history = f"{WAL}00000002.history"
    s3.write(history, os.urandom(20 << 20))
    before = s3.keys(WAL)
    started = time.monotonic()
    r = pitr("pitr", "promote", "huge", "--yes", "--json")
    assert r.exit_code == 5, r.output
    assert "different contents" in json.loads(r.stdout)["message"]
    assert time.monotonic() - started < 120
    assert facts(pitr) == now and s3.keys(WAL) == before


_STALL = """
import os, signal
from moviectl.core.backups import s3
put = s3.S3Repository.put
def _put(self, name, source):
    if "/wal" in self.url:
        os.kill(int(os.environ["WEED_PID"]), signal.SIGSTOP)  # the endpoint stalls mid-upload
    return put(self, name, source)
s3.S3Repository.put = _put
from moviectl.cli.entry import main
main()
"""


def _stopped(s3: SeaweedS3) -> bool:
    assert s3.proc is not None
    with open(f"/proc/{s3.proc.pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] == "T"


def test_a_stalled_endpoint_mid_upload_is_a_bounded_wait(pitr: Cli, s3: SeaweedS3) -> None:
    """The bucket stops answering mid-upload: the promote ends within the stall bound
    (exit 3, nothing swapped), a second promote meanwhile is refused at once (exit 5),
    and once the bucket answers the same command goes through."""
    want = _restored(pitr, "stall")
    now = facts(pitr)
    assert s3.proc is not None
    env = subprocess_env(**pitr.env, WEED_PID=str(s3.proc.pid), MOVIE_STALL_TIMEOUT="5")
    started = time.monotonic()
    proc = start_moviectl(env, "pitr", "promote", "stall", "--yes", "--json", python=_STALL)
    try:
        assert wait_for(lambda: _stopped(s3), 120), "the upload never began"
        second = pitr("pitr", "promote", "stall", "--yes", "--json")  # meanwhile: refused
        assert second.exit_code == 5 and "another promote" in second.output, second.output
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        s3.resume()
    assert time.monotonic() - started < 150
    assert proc.returncode == 3, out + err
    assert "nothing was swapped" in json.loads(out)["message"]
    assert facts(pitr) == now
    assert not (Path(pitr.env["MOVIE_DATA_DIR"]) / "promoting.json").exists()
    r = pitr("pitr", "promote", "stall", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want


def test_the_keys_are_only_in_the_private_env_file(pitr: Cli, s3: SeaweedS3) -> None:
    """After a promote: the secret is in no output, and in one file only (the scripts'
    env file, 0600, in a directory others cannot list) of MOVIE_DATA_DIR and MOVIE_BACKUP_DIR (the
    promoted server's conf and log included)."""
    _restored(pitr, "keys")
    r = pitr("pitr", "promote", "keys", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert SECRET_KEY not in r.output
    _archives_into_the_bucket(pitr, s3)
    holders = []
    for top in (pitr.env["MOVIE_DATA_DIR"], pitr.env["MOVIE_BACKUP_DIR"]):
        for path in Path(top).rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    if SECRET_KEY.encode() in path.read_bytes():
                        holders.append(path)
                except OSError:
                    continue
    env_file = Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "s3-wal" / "s3-wal.env"
    assert holders == [env_file], holders
    assert env_file.stat().st_mode & 0o077 == 0
    assert env_file.parent.stat().st_mode & 0o066 == 0  # at most o+x: not listable
    conf = Path(pitr.env["MOVIE_DATA_DIR"]) / "pgdata" / "moviectl-pitr.conf"
    assert conf.stat().st_mode & 0o077 == 0 and "s3-wal.sh" in conf.read_text()


def test_the_same_restore_again_after_a_promote_cut_mid_upload_can_be_promoted(
    pitr: Cli, s3: SeaweedS3
) -> None:
    """The user gives up on a promote killed before the history file (discards it) and
    restores to the same moment again: that restore takes timeline 3, past the first one's
    leftovers (timeline-2 segments without a history file, never replaced or deleted), its
    promote goes through, a tombstone history file fills the gap at 2, and a `--latest`
    restore from the bucket alone follows timeline 3 (the documented re-run of the first
    promote works too: the test above)."""
    with conn(pitr) as c:
        time.sleep(1.1)
        row = c.execute("SELECT now()").fetchone()
        assert row is not None
        time.sleep(1.1)
        c.execute(_MORE, ("lost",))
    noted = row[0].isoformat()
    r = pitr("restore", "--physical", "--to-time", noted, "--into", "first", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["timeline"] == 2
    want = facts(int(json.loads(r.stdout)["port"]), pitr)
    env = subprocess_env(**pitr.env, KILL_AT="history")
    proc = start_moviectl(env, "pitr", "promote", "first", "--yes", python=_KILL_AT)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert pitr("pitr", "discard", "first", "--yes").exit_code == 0  # the user gave up on it
    left = {k: s3.read(k) for k in s3.keys(WAL) if k.startswith(f"{WAL}00000002")}
    assert left and f"{WAL}00000002.history" not in s3.keys(WAL), left.keys()

    r = pitr("restore", "--physical", "--to-time", noted, "--into", "second", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["timeline"] == 3, r.stdout
    assert facts(int(json.loads(r.stdout)["port"]), pitr) == want
    r = pitr("pitr", "promote", "second", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert {k: s3.read(k) for k in left} == left  # the leftovers, as they were
    tomb = s3.read(f"{WAL}00000002.history").decode()
    assert all(x.startswith("#") for x in tomb.splitlines()), tomb  # comments: never followed
    assert "\n1\t" in "\n" + s3.read(f"{WAL}00000003.history").decode()  # forked from 1

    _archives_into_the_bucket(pitr, s3)  # life on timeline 3
    after = facts(pitr)
    shutil.rmtree(Path(pitr.env["MOVIE_BACKUP_DIR"]) / "pitr" / "base")  # the bucket alone
    r = pitr("restore", "--physical", "--latest", "--into", "follow", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["timeline"] == 4, r.stdout  # through 2's tombstone to 3
    assert facts(int(json.loads(r.stdout)["port"]), pitr) == after
