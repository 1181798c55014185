"""A real PgBouncer (Debian's /usr/sbin/pgbouncer), for the pooler tests.

``pgbouncer`` is one in transaction mode (what most platforms run); ``start_pgbouncer``
starts one in any ``pool_mode`` (session, statement). Each is started on a free 127.0.0.1 port in front of this worker's server with its own ini and
userlist in a temp directory, ``admin_users`` set (the ``pgbouncer`` console answers
``SHOW POOLS``), and killed at teardown. When the binary is missing the tests skip,
unless MOVIECTL_REQUIRE_PGBOUNCER is set (CI sets it: there a skip would hide a break).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from moviectl.infra.settings import DbTarget
from tests.ports import free_port

BINARY = os.environ.get("MOVIECTL_PGBOUNCER", "/usr/sbin/pgbouncer")


@dataclass
class Bouncer:
    port: int
    server: DbTarget  # the direct server behind it (postgres database)
    proc: subprocess.Popen[bytes]
    log: Path

    def target(self, database: str) -> DbTarget:
        """``database`` on the direct server, reached through the pooler."""
        return DbTarget("127.0.0.1", self.port, self.server.user, self.server.password, database)

    def admin(self) -> DbTarget:
        """PgBouncer's admin console (the ``pgbouncer`` pseudo-database)."""
        return self.target("pgbouncer")


def _run_as() -> str | None:
    """PgBouncer refuses to run as root: as root, run it as the embedded server's user."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("embedded_postgres", "postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


@pytest.fixture
def pgbouncer(moviectl_admin_target: DbTarget, tmp_path: Path) -> Iterator[Bouncer]:
    with start_pgbouncer(moviectl_admin_target, tmp_path, "transaction") as bouncer:
        yield bouncer


@contextmanager
def start_pgbouncer(server: DbTarget, tmp_path: Path, mode: str) -> Iterator[Bouncer]:
    """A PgBouncer in ``mode`` in front of ``server``, killed when the block ends."""
    if not Path(BINARY).is_file():
        if os.environ.get("MOVIECTL_REQUIRE_PGBOUNCER"):
            pytest.fail(f"MOVIECTL_REQUIRE_PGBOUNCER is set but {BINARY} is missing")
        pytest.skip(f"no PgBouncer at {BINARY} (Debian: apt-get install pgbouncer)")
    home = tmp_path / f"pgbouncer-{mode}"
    home.mkdir()
    port = free_port()
    user, password = server.user, server.password or ""
    (home / "userlist.txt").write_text(f'"{user}" "{password}"\n')
    (home / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={server.host} port={server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = plain
auth_file = {home / "userlist.txt"}
admin_users = {user}
pool_mode = {mode}
max_client_conn = 500
default_pool_size = 8
ignore_startup_parameters = extra_float_digits
server_reset_query =
logfile = {home / "pgbouncer.log"}
pidfile = {home / "pgbouncer.pid"}
"""
    )
    owner = _run_as()
    cmd = [BINARY, str(home / "pgbouncer.ini")]
    if owner is not None:
        shutil.chown(home, owner)
        for f in home.iterdir():
            shutil.chown(f, owner)
        os.chmod(tmp_path, 0o755)
        cmd[1:1] = ["-u", owner]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    bouncer = Bouncer(port, server, proc, home / "pgbouncer.log")
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                log = bouncer.log.read_text() if bouncer.log.exists() else ""
                pytest.fail(f"pgbouncer exited {proc.returncode}: {err}{log[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("pgbouncer did not listen within 30 s")
                time.sleep(0.05)
        yield bouncer
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
