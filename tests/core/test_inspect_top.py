"""`moviectl db top` in a real terminal (tmux): it shows the sessions, the idle transaction
and the blocking chain created here, refreshes, and quits cleanly on q and on Ctrl-C."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.core.inspect_support import (
    Server,
    Waiter,
    doc,
    fresh_database,
    stats_server,
    wait_until_waiting,
)

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with stats_server(tmp_path_factory.mktemp("top")) as server:
        yield server


class Tmux:
    """A tmux server of the test's own (its own socket) running one command in a pane."""

    def __init__(self, script: Path) -> None:
        self.socket = f"moviectl-top-{secrets.token_hex(4)}"
        self("new-session", "-d", "-s", "top", "-x", "200", "-y", "50", f"bash {script}")

    def __call__(self, *args: str) -> str:
        r = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return r.stdout

    def screen(self) -> str:
        size = self("display", "-p", "-t", "top", "#{pane_width}x#{pane_height}")
        return f"[{size.strip()}]\n" + self("capture-pane", "-p", "-t", "top")

    def shows(self, *needles: str) -> bool:
        text = self.screen()
        return all(n in text for n in needles)

    def close(self) -> None:
        self("kill-server")


def top_in_tmux(tmp_path: Path, url: str) -> Tmux:
    script = tmp_path / "top.sh"
    script.write_text(
        # the pane's own size, not one inherited from the test run's environment
        f"cd {ROOT}\nunset COLUMNS LINES\n"
        f"MOVIE_DATABASE_URL='{url}' {sys.executable} -m moviectl db top "
        '--interval 0.3\necho "top exited $?"\nsleep 60\n'
    )
    script.chmod(0o700)
    return Tmux(script)


@pytest.mark.parametrize("quit_key", ["q", "C-c"])
def test_db_top_shows_the_blocking_chain_and_quits(
    pg: Server, tmp_path: Path, quit_key: str
) -> None:
    with fresh_database(pg) as (name, _cli):
        with pg.connect(name) as c:
            c.execute("CREATE TABLE films (id int)")
        holder = pg.connect(name, application_name="holder-app")
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE films IN ACCESS EXCLUSIVE MODE")
        waiter = Waiter(pg.connect(name, application_name="waiter-app"), "SELECT * FROM films")
        tmux = top_in_tmux(tmp_path, pg.url(name))
        try:
            wait_until_waiting(pg, name, waiter.pid)
            hpid = str(holder.info.backend_pid)
            assert wait_for(
                lambda: tmux.shows("moviectl db top", "holder-app", "waiter-app", "q quits"), 60
            ), tmux.screen()
            line = next(x for x in tmux.screen().splitlines() if "waiter-app" in x)
            assert hpid in line and "Lock:relation" in line  # blocked by the holder
            assert "idle in transaction" in tmux.screen()
            holder.execute("ROLLBACK")  # the chain ends: the next refresh shows it
            waiter.join()
            assert wait_for(lambda: "Lock:relation" not in tmux.screen(), 60), tmux.screen()
            tmux("send-keys", "-t", "top", quit_key)
            assert wait_for(lambda: tmux.shows("top exited 0"), 60), tmux.screen()
        finally:
            tmux.close()
            holder.close()
            waiter.conn.close()


def test_db_top_once_and_json(pg: Server) -> None:
    with fresh_database(pg) as (name, cli), pg.connect(name, application_name="idle-app") as idle:
        idle.execute("BEGIN")
        idle.execute("SELECT 1")
        report = doc(cli("db", "top", "--json"))
        row = next(s for s in report["sessions"] if s["pid"] == idle.info.backend_pid)
        assert row["state"] == "idle in transaction" and row["application"] == "idle-app"
        assert report["counts"]["idle_in_transaction"] >= 1
        r = cli("db", "top", "--once", COLUMNS="200")
        assert r.exit_code == 0 and "idle-app" in r.stdout and "q quits" not in r.stdout
