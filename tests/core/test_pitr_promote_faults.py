"""`pitr promote` (embedded) under kill -9, SIGTERM and a second promote at once: the swap
is journaled, `db up` refuses to initdb over a missing `pgdata` meanwhile, and running the
promote again finishes it with the restored rows."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Cli, start_moviectl, subprocess_env, wait_for
from tests.core.pitr_support import conn, facts, started, status

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def pitr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    run = started(tmp_path_factory.mktemp("pitr-promote"))
    cli = next(run)  # held: closing it discards the restores and stops the server
    with conn(cli) as c:
        c.execute("CREATE TABLE t (i int PRIMARY KEY, payload text)")
        c.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g")
    r = cli("backup", "--physical")
    assert r.exit_code == 0, r.output
    try:
        yield cli
    finally:
        run.close()


def _restored(cli: Cli, name: str) -> tuple[int, str]:
    """A restore of now named ``name``; then the server moves on (rows the restore lacks)."""
    with conn(cli) as c:
        c.execute(
            "INSERT INTO t SELECT max(i) + g, 'kept' FROM t, generate_series(1, 10) g GROUP BY g"
        )
    r = cli("restore", "--physical", "--latest", "--into", name, "--json")
    assert r.exit_code == 0, r.output
    want = facts(int(json.loads(r.stdout)["port"]), cli)
    with conn(cli) as c:
        c.execute(
            "INSERT INTO t SELECT max(i) + g, 'lost' FROM t, generate_series(1, 10) g GROUP BY g"
        )
    assert facts(cli) != want
    return want


def _signal_when_journaled(cli: Cli, name: str, sig: int) -> tuple[int, str]:
    journal = Path(cli.env["MOVIE_DATA_DIR"]) / "promoting.json"
    proc = start_moviectl(subprocess_env(**cli.env), "pitr", "promote", name, "--yes", cwd=None)
    try:
        assert wait_for(journal.exists, 120), "the promote never started its swap"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err
    finally:
        proc.kill()


_KILLED_BETWEEN_RENAMES = """
import os, signal
rename = os.rename
def _rename(src, dst, *a, **kw):  # kill -9 the moment the old pgdata went aside
    rename(src, dst, *a, **kw)
    if os.path.basename(str(dst)).startswith("pgdata.before-"):
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = _rename
from moviectl.cli.entry import main
main()
"""


def test_kill_9_between_the_renames_is_refused_by_db_up_and_finished_by_promote(
    pitr: Cli,
) -> None:
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    want = _restored(pitr, "k9")
    env = subprocess_env(**pitr.env)
    proc = start_moviectl(env, "pitr", "promote", "k9", "--yes", python=_KILLED_BETWEEN_RENAMES)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == -signal.SIGKILL, err
    journal = json.loads((data / "promoting.json").read_text())
    assert Path(journal["aside"]).is_dir() and Path(journal["restored"]).is_dir()
    assert not (data / "pgdata").exists()  # the gap: no cluster where the server's goes
    r = pitr("pitr", "status", "--json")  # the server is gone: status says why, what next
    assert r.exit_code == 3, r.output
    warned = json.loads(r.stdout)["warnings"]
    assert any("moviectl pitr promote k9 --yes" in w for w in warned), warned
    r = pitr("doctor", "--json")
    found = {f["name"]: f for f in json.loads(r.stdout)["findings"]}
    assert found["pitr promote"]["status"] == "warn" and "k9" in found["pitr promote"]["detail"]
    r = pitr("pitr", "discard", "k9", "--yes")  # it may be all there is of the server
    assert r.exit_code == 5 and "pitr promote k9" in r.output, r.output
    r = pitr("db", "up")
    assert r.exit_code == 5, r.output  # never an empty initdb where the cluster goes
    assert "pitr promote k9" in r.output
    r = pitr("db", "upgrade", "--to", "18", "--yes")  # nor an upgrade of whatever is there
    assert r.exit_code == 5 and "pitr promote k9" in r.output, r.output
    assert not (data / "pgdata").exists()
    r = pitr("pitr", "promote", "k9", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want
    assert Path(journal["aside"]).is_dir() and not (data / "promoting.json").exists()
    assert "k9" not in [x["name"] for x in status(pitr)["restores"]]
    assert pitr("db", "up").exit_code == 0


def test_kill_9_once_journaled_is_finished_by_promote(pitr: Cli) -> None:
    """Killed before the renames (stopping one of the two servers): the old cluster is
    in place, maybe stopped; running the promote again swaps."""
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    want = _restored(pitr, "k9b")
    code, _ = _signal_when_journaled(pitr, "k9b", signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert (data / "promoting.json").exists()
    assert pitr("db", "up").exit_code == 5
    r = pitr("pitr", "promote", "k9b", "--yes")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want and not (data / "promoting.json").exists()


def test_sigterm_mid_promote_says_how_to_finish_it(pitr: Cli) -> None:
    data = Path(pitr.env["MOVIE_DATA_DIR"])
    want = _restored(pitr, "term")
    code, err = _signal_when_journaled(pitr, "term", signal.SIGTERM)
    if code == 0:
        pytest.fail("the promote finished before SIGTERM reached it")
    assert code == 143, err
    assert "moviectl pitr promote term --yes" in err
    assert (data / "pgdata").exists() or Path(
        json.loads((data / "promoting.json").read_text())["restored"]
    ).exists()  # never both renames cut apart: one of the two is where it belongs
    r = pitr("pitr", "promote", "term", "--yes")
    assert r.exit_code == 0, r.output
    assert facts(pitr) == want and not (data / "promoting.json").exists()


def test_a_second_promote_at_once_is_refused(pitr: Cli) -> None:
    from moviectl.core.pitr.promote import promote_lock
    from moviectl.infra.settings import Settings

    restores = Path(pitr.env["MOVIE_DATA_DIR"]).resolve() / "restores"
    _restored(pitr, "second")
    before = facts(pitr)
    settings = Settings(data_dir=Path(pitr.env["MOVIE_DATA_DIR"]))  # type: ignore[call-arg]
    with promote_lock(settings):  # a first promote, running
        r = pitr("pitr", "promote", "second", "--yes")
        assert r.exit_code == 5 and f"another promote is running (pid {os.getpid()})" in r.output
        r = pitr("restore", "--physical", "--latest", "--promote", "--into", "x", "--yes")
        assert r.exit_code == 5, r.output
        assert not (restores / "x").exists()  # refused before restoring anything
    assert facts(pitr) == before
    assert pitr("pitr", "promote", "second", "--yes").exit_code == 0


def test_a_promote_refuses_while_a_db_upgrade_awaits_finish(pitr: Cli) -> None:
    """`db upgrade` done but not finished owns `pgdata` (its old cluster is kept beside it
    for --rollback): a promote moving `pgdata` aside would break that, so it refuses."""
    from moviectl.core.servers.upgrade_state import clear_state, write_state

    data = Path(pitr.env["MOVIE_DATA_DIR"]).resolve()
    _restored(pitr, "upgrading")
    before, aside = facts(pitr), set(data.glob("pgdata.before-*"))
    write_state(data, {"phase": "done", "from": 17, "to": 18, "method": "copy", "pid": 1})
    try:
        r = pitr("--json", "pitr", "promote", "upgrading", "--yes")
        assert r.exit_code == 5, r.output
        doc = json.loads(r.stdout)
        assert "db upgrade" in doc["message"] and "--finish" in doc["hint"], doc
        assert not (data / "promoting.json").exists()
        assert set(data.glob("pgdata.before-*")) == aside
    finally:
        clear_state(data)
    assert facts(pitr) == before
    assert pitr("pitr", "promote", "upgrading", "--yes").exit_code == 0
