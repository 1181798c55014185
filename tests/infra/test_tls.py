"""TLS end to end, against a server that accepts nothing but verified TLS.

The server is Debian's PostgreSQL 15 (the embedded wheel's build has no TLS) with a CA and
a server certificate made here for `localhost` only, and a pg_hba.conf of `hostssl` lines:
a plaintext connection, moviectl's or a child tool's, is refused, so a command that works
went over TLS. The same URL with 127.0.0.1 (not in the certificate) must fail: exit 3.
"""

from __future__ import annotations

import os
import pwd
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from moviectl.core.servers.cluster import (
    SYSTEM_USER,
    TEST_OPTIONS,
    EmbeddedServer,
    ensure_system_user,
)
from tests.conftest import Cli, subprocess_env

pytest_plugins = ["pytester"]
PG15 = Path("/usr/lib/postgresql/15/bin")


@dataclass
class TlsServer:
    port: int
    password: str
    ca: Path

    def url(self, database: str = "movies", host: str = "localhost", **extra: str) -> str:
        params = {"sslmode": "verify-full", "sslrootcert": str(self.ca), **extra}
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
        return f"postgresql://postgres:{quote(self.password)}@{host}:{self.port}/{database}?{query}"


def _certificates(d: Path, names: tuple[str, ...] = ("localhost",)) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``names`` (subjectAltName DNS entries) in ``d``."""
    d.mkdir(parents=True)

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=moviectl test CA",
    )
    ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        f"/CN={names[0]}",
    )
    (d / "san.ext").write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    )
    return d / "ca.pem", d / "server.crt", d / "server.key"


def need_pg15() -> None:
    if not (PG15 / "postgres").exists():
        if os.environ.get("CI") or os.environ.get("MOVIECTL_REQUIRE_DOCKER") == "1":
            pytest.fail(f"no TLS-capable PostgreSQL at {PG15} (.ci/run installs postgresql-15)")
        pytest.skip(f"no TLS-capable PostgreSQL at {PG15} (apt-get install postgresql-15)")


HOSTSSL_ONLY = "hostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n"


def write_server_file(path: Path, text: str) -> None:
    """A file the server (the system user when run as root) must read."""
    path.write_text(text)
    if os.geteuid() == 0:
        entry = pwd.getpwnam(SYSTEM_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def start_tls_server(
    base: Path, hba: str = HOSTSSL_ONLY, names: tuple[str, ...] = ("localhost",)
) -> tuple[EmbeddedServer, TlsServer]:
    """A PostgreSQL 15 with ``ssl=on``, a CA and a certificate for ``names``, and ``hba``
    (``base/certs/hba.conf``); the caller stops it."""
    from tests.ports import free_port

    ca, crt, key = _certificates(base / "certs", names)
    if os.geteuid() == 0:  # the server runs as the system user and must read its key
        ensure_system_user()
        entry = pwd.getpwnam(SYSTEM_USER)
        for f in (crt, key):
            os.chown(f, entry.pw_uid, entry.pw_gid)
        os.chmod(base / "certs", 0o755)
    write_server_file(base / "certs" / "hba.conf", hba)
    key.chmod(0o600)
    password = secrets.token_urlsafe(12)
    options = {
        **TEST_OPTIONS,
        "ssl": "on",
        "ssl_cert_file": f"'{crt}'",
        "ssl_key_file": f"'{key}'",
        "hba_file": f"'{base / 'certs' / 'hba.conf'}'",
    }
    srv = EmbeddedServer(base / "pg", free_port(), "postgres", password, PG15, options)
    srv.start()
    return srv, TlsServer(srv.port, password, ca)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[TlsServer]:
    need_pg15()
    srv, server = start_tls_server(tmp_path_factory.mktemp("tls"))
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as c:
            c.execute("CREATE DATABASE movies")
        yield server
    finally:
        srv.stop("immediate")


def test_every_command_works_over_verified_tls(tls, tmp_path):
    cli = Cli(
        {
            "MOVIE_DATABASE_URL": tls.url(),
            "MOVIE_DATABASE_URL_TEST": tls.url("postgres"),
            "MOVIE_BACKUP_DIR": str(tmp_path / "backups"),
        }
    )
    for args in (
        ["migrate"],
        ["health"],
        ["seed", "--sample", "2000"],
        ["migrate", "status"],
        ["testdb", "create", "--json"],
    ):
        r = cli(*args)
        assert r.exit_code == 0, (args, r.output)
        assert tls.password not in r.output
    r = cli("backup", "--json")
    assert r.exit_code == 0, r.output
    import json

    doc = json.loads(r.stdout)
    assert doc["manifest"]["pg_dump_version"].startswith("15"), doc  # the TLS-capable build
    assert cli("backup", "verify", doc["path"]).exit_code == 0
    r = cli("restore", doc["path"], "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["row_counts"]["movies"] == 2000

    shell = subprocess.run(
        [sys.executable, "-m", "moviectl", "db", "shell", "--psql"],
        input="select ssl from pg_stat_ssl where pid = pg_backend_pid();\n",
        env=subprocess_env(**cli.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.returncode == 0, shell.stderr
    assert " t" in shell.stdout


def test_the_pytest_plugin_works_over_tls(tls, pytester, monkeypatch):
    pytester.makepyfile(
        """
        import psycopg

        def test_over_tls(movie_db_url):
            with psycopg.connect(movie_db_url) as conn:
                row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
                assert row.fetchone()[0] is True
                assert conn.execute("select count(*) from movies").fetchone()[0] == 0
        """
    )
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", tls.url("postgres"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0")
    result.assert_outcomes(passed=1)
    assert tls.password not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize(
    "args", [["health"], ["migrate"], ["seed", "--sample", "3"], ["backup"], ["testdb", "create"]]
)
def test_a_host_the_certificate_does_not_name_is_a_tls_error(tls, tmp_path, args):
    url = tls.url(host="127.0.0.1")
    cli = Cli(
        {
            "MOVIE_DATABASE_URL": url,
            "MOVIE_DATABASE_URL_TEST": tls.url("postgres", host="127.0.0.1"),
            "MOVIE_BACKUP_DIR": str(tmp_path),
        }
    )
    r = cli(*args)
    assert r.exit_code == 3, r.output
    assert "TLS" in r.output and "Traceback" not in r.output and tls.password not in r.output


def test_require_against_a_server_without_tls_is_exit_3(moviectl_admin_target):
    url = moviectl_admin_target.url(masked=False)  # TLS fails before any database is chosen
    sep = "&" if "?" in url else "?"
    r = Cli({"MOVIE_DATABASE_URL": f"{url}{sep}sslmode=require"})("health")
    assert r.exit_code == 3, r.output
    assert "does not offer TLS" in r.output


def test_a_missing_root_certificate_is_a_usage_error(tls, tmp_path):
    url = tls.url(sslrootcert=str(tmp_path / "nope.pem"))
    r = Cli({"MOVIE_DATABASE_URL": url})("migrate", "status")
    assert r.exit_code == 2, r.output
    assert "nope.pem" in r.stderr and tls.password not in r.output
