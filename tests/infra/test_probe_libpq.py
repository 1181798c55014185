"""The pg_isready probe (infra/probe.py) asks as libpq does, and the real pg_isready agrees.

Against Debian's PostgreSQL 15 with TLS (a CA and a certificate for localhost and
db.internal) under several pg_hba.conf files, and the embedded PostgreSQL 18 (no TLS): each
conninfo goes to the probe and to /usr/lib/postgresql/15/bin/pg_isready, which must give the
same verdict, and the probe must leave no new line in the server log.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from moviectl.infra.probe import (
    ACCEPTING,
    NO_RESPONSE,
    PG_ISREADY_CODES,
    ping_target,
    reachable_target,
)
from moviectl.infra.settings import parse_db_url
from tests.conftest import Cli, wait_for
from tests.infra.test_tls import (
    PG15,
    _certificates,
    need_pg15,
    start_tls_server,
    write_server_file,
)
from tests.ports import free_port

LOCAL = ("127.0.0.1/32", "::1/128")
HBA = {
    # TLS only, two ways
    "hostssl": "".join(f"hostssl all all {n} scram-sha-256\n" for n in LOCAL),
    "nossl-reject": "".join(
        f"hostnossl all all {n} reject\nhost all all {n} scram-sha-256\n" for n in LOCAL
    ),
    # TLS optional
    "host": "".join(f"host all all {n} scram-sha-256\n" for n in LOCAL),
}
TRUST = "".join(f"hostnossl all all {n} reject\nhostssl all all {n} trust\n" for n in LOCAL)


@dataclass
class Pg15:
    srv: EmbeddedServer
    port: int
    password: str
    ca: Path
    other_ca: Path
    reloads: int = 0

    def conninfo(self, **kw: str) -> str:
        params = {"host": "localhost", "port": str(self.port), "user": "postgres"}
        params.update({"dbname": "postgres", "sslrootcert": str(self.ca), **kw})
        return " ".join(f"{k}={v}" for k, v in params.items())

    def use_hba(self, text: str) -> None:
        """Swap pg_hba.conf and wait until the server has reloaded it."""
        write_server_file(self.srv.data_dir.parent / "certs" / "hba.conf", text)
        url = self.conninfo(sslmode="verify-full", password=self.password)
        with psycopg.connect(url, autocommit=True) as c:
            c.execute("select pg_reload_conf()")
        self.reloads += 1
        assert wait_for(lambda: self.srv.logfile.read_text().count("reloading") >= self.reloads)


@pytest.fixture(scope="module")
def pg15(tmp_path_factory) -> Iterator[Pg15]:
    need_pg15()
    base = tmp_path_factory.mktemp("probe-tls")
    srv, server = start_tls_server(base, HBA["hostssl"], names=("localhost", "db.internal"))
    other_ca = _certificates(base / "other", ("localhost", "db.internal"))[0]
    try:
        yield Pg15(srv, server.port, server.password, server.ca, other_ca)
    finally:
        srv.stop("immediate")


@pytest.fixture(scope="module")
def pg18(tmp_path_factory) -> Iterator[EmbeddedServer]:
    """The embedded server: no TLS (it answers "N" to an SSLRequest)."""
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("probe-plain") / "q",
        free_port(),
        "postgres",
        "pw",
        options=TEST_OPTIONS,
    )
    srv.start()
    yield srv
    srv.stop("immediate")


@pytest.fixture(autouse=True)
def _no_client_defaults(monkeypatch, tmp_path):
    """Neither the probe nor pg_isready may find a password or ~/.postgresql files."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    for name in list(os.environ):
        if name.startswith("PG") and name != "PGPASSFILE":
            monkeypatch.delenv(name)


def pg_isready(conninfo: str) -> int:
    r = subprocess.run(
        [str(PG15 / "pg_isready"), "-d", conninfo, "-t", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return r.returncode


def probe(conninfo: str) -> str:
    return ping_target(parse_db_url(conninfo), timeout=20).outcome


def quiet_probe(srv: EmbeddedServer, conninfo: str) -> tuple[str, str]:
    """The probe's outcome and the server log lines it caused (a bounded look for late ones)."""
    before = srv.logfile.read_text()
    outcome = probe(conninfo)
    time.sleep(1.0)
    return outcome, srv.logfile.read_text()[len(before) :]


def same_as_pg_isready(conninfo: str, outcome: str) -> None:
    assert PG_ISREADY_CODES[outcome] == pg_isready(conninfo), (conninfo, outcome)


CASES = {
    "prefer": {"sslmode": "prefer"},
    "allow": {"sslmode": "allow"},
    "require": {"sslmode": "require", "host": "127.0.0.1"},
    "verify-ca": {"sslmode": "verify-ca", "host": "127.0.0.1"},
    "verify-full": {"sslmode": "verify-full"},
    "hostaddr": {"sslmode": "verify-full", "host": "db.internal", "hostaddr": "127.0.0.1"},
}


@pytest.mark.parametrize("hba", list(HBA))
def test_accepting_over_tls_leaves_no_log_line(pg15, hba):
    pg15.use_hba(HBA[hba])
    for name, kw in CASES.items():
        if hba != "host" and name == "allow":
            continue  # libpq's plaintext first try is a FATAL line there (the probe's is not)
        conninfo = pg15.conninfo(**kw)
        outcome, lines = quiet_probe(pg15.srv, conninfo)
        assert (outcome, lines) == (ACCEPTING, ""), (hba, name)
        same_as_pg_isready(conninfo, outcome)
    conninfo = pg15.conninfo(sslmode="allow")  # the probe asks TLS first, so no line either
    assert quiet_probe(pg15.srv, conninfo) == (ACCEPTING, "")


def test_an_unverified_certificate_ends_the_probe_before_any_login(pg15):
    pg15.use_hba(HBA["hostssl"])
    for kw in (
        {"sslmode": "verify-full", "sslrootcert": str(pg15.other_ca)},
        {"sslmode": "verify-ca", "sslrootcert": str(pg15.other_ca)},
        {"sslmode": "verify-full", "host": "127.0.0.1"},  # a name the certificate lacks
        {"sslmode": "verify-full", "sslrootcert": "/nonexistent/root.crt"},
    ):
        conninfo = pg15.conninfo(**kw)
        outcome, lines = quiet_probe(pg15.srv, conninfo)
        assert outcome == NO_RESPONSE, kw
        # at most the server's "could not accept SSL connection": no startup, no auth
        assert "FATAL" not in lines and "authentication" not in lines, lines
        assert all("SSL" in line for line in lines.splitlines()), lines
        same_as_pg_isready(conninfo, outcome)
    t = parse_db_url(pg15.conninfo(sslmode="verify-full", sslrootcert=str(pg15.other_ca)))
    status, detail, code, _ = reachable_target(t, 20)
    assert (status, code) == ("fail", 3) and "certificate verify failed" in detail, detail


def test_hosts_are_tried_in_order(pg15):
    pg15.use_hba(HBA["hostssl"])
    down = str(free_port())
    for kw in (
        {"host": "localhost,localhost", "port": f"{down},{pg15.port}"},
        {
            "host": "db.internal,db.internal",
            "hostaddr": "127.0.0.1,127.0.0.1",
            "port": f"{down},{pg15.port}",
        },
        {"host": "no-such-host.invalid,localhost", "port": f"{pg15.port}"},
    ):
        conninfo = pg15.conninfo(sslmode="verify-full", **kw)
        outcome, lines = quiet_probe(pg15.srv, conninfo)
        assert (outcome, lines) == (ACCEPTING, ""), kw
        same_as_pg_isready(conninfo, outcome)
    conninfo = pg15.conninfo(host="localhost,localhost", port=f"{down},{down}")
    assert probe(conninfo) == NO_RESPONSE
    same_as_pg_isready(conninfo, NO_RESPONSE)


def test_target_session_attrs_when_the_server_lets_the_probe_in(pg15):
    """Without a password the probe (and pg_isready) stops at the password request; under
    trust it logs in, and a server of the wrong kind sends it to the next host."""
    pg15.use_hba(TRUST)
    down = str(free_port())
    try:
        for tsa in ("any", "read-write", "primary", "standby", "read-only", "prefer-standby"):
            for port in (str(pg15.port), f"{pg15.port},{down}", f"{down},{pg15.port}"):
                conninfo = pg15.conninfo(
                    sslmode="verify-full",
                    host="localhost,localhost"[: 9 if "," not in port else None],
                    port=port,
                    target_session_attrs=tsa,
                )
                outcome, lines = quiet_probe(pg15.srv, conninfo)
                assert lines == "", (tsa, port, lines)
                same_as_pg_isready(conninfo, outcome)
    finally:
        pg15.use_hba(HBA["hostssl"])


def test_a_server_without_tls(pg18):
    base = f"host=127.0.0.1 port={pg18.port} user=postgres dbname=postgres"
    for sslmode, expected in (
        ("disable", ACCEPTING),
        ("prefer", ACCEPTING),
        ("require", NO_RESPONSE),  # the server says "N": no startup packet in plaintext
        ("verify-full", NO_RESPONSE),
    ):
        conninfo = f"{base} sslmode={sslmode}"
        outcome, lines = quiet_probe(pg18, conninfo)
        assert (outcome, lines) == (expected, ""), sslmode
        same_as_pg_isready(conninfo, outcome)


def test_health_live_follows_the_url(pg15):
    """`health --live` (the container healthcheck) on a TLS-only server, through hostaddr."""
    pg15.use_hba(HBA["nossl-reject"])
    url = (
        f"postgresql://postgres:{quote(pg15.password)}@db.internal:{pg15.port}/postgres"
        f"?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={quote(str(pg15.ca), safe='')}"
    )
    before = pg15.srv.logfile.read_text()
    r = Cli({"MOVIE_DATABASE_URL": url})("health", "--live", "--json")
    assert r.exit_code == 0, r.output
    assert pg15.password not in r.output
    time.sleep(1.0)
    assert pg15.srv.logfile.read_text() == before
