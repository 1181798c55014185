"""Driver errors by SQLSTATE (infra/pgerrors.py), each condition provoked on the real server.

Every translated error has its class and exit code, names host:port/database and never
holds a password. What no test server can do on demand (a full disk, a crash) is checked
against the table with psycopg's own error classes; pg_dump's words (no SQLSTATE) too.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg

from moviectl.cli.failure import as_moviectl_error
from moviectl.core.migrations import timeouts
from moviectl.infra import pgerrors
from moviectl.infra.conninfo import DbTarget, parse_db_url
from moviectl.infra.engine import connect, db_errors, translate_error
from moviectl.infra.errors import (
    AuthFailed,
    ConfigError,
    DatabaseMissing,
    ExitCode,
    InternalError,
    LockBusy,
    MoviectlError,
    OutOfResources,
    PermissionDenied,
    ServerFailed,
    StatementCanceled,
    Unreachable,
)
from tests.conftest import Cli, run_moviectl, subprocess_env, wait_for


@pytest.fixture
def db(movie_db_url: str) -> DbTarget:
    """The test's own database, as its owner (the superuser)."""
    return parse_db_url(movie_db_url)


@pytest.fixture
def make_role(db: DbTarget) -> Iterator[Callable[[str], DbTarget]]:
    """``make_role("CONNECTION LIMIT 0")``: a login role with a password and these options,
    as a target on the test's database; dropped afterwards."""
    made: list[str] = []

    def make(options: str = "") -> DbTarget:
        role, pw = f"pgerr_{secrets.token_hex(4)}", f"Role-Secret-{secrets.token_hex(6)}"
        with psycopg.connect(db.url(masked=False), autocommit=True) as c:
            c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}' {options}")
        made.append(role)
        return replace(db, user=role, password=pw)

    yield make
    with psycopg.connect(db.url(masked=False), autocommit=True) as c:
        for role in made:
            c.execute(f'REVOKE ALL ON DATABASE "{db.database}" FROM {role}')
            c.execute(f"DROP ROLE {role}")


def _check(
    err: MoviectlError, cls: type[MoviectlError], code: ExitCode, t: DbTarget, *secrets_: str
) -> None:
    assert type(err) is cls, (type(err), err.message)
    assert err.exit_code == code
    assert f"{t.host}:{t.port}" in err.message and t.database in err.message, err.message
    assert err.hint, err.message
    shown = json.dumps(err.to_dict())
    for secret in (*secrets_, t.password):
        if secret:
            assert secret not in shown, shown


def _connect_error(t: DbTarget, timeout: int = 5) -> MoviectlError:
    with pytest.raises(MoviectlError) as caught:
        connect(t, connect_timeout=timeout).close()
    return caught.value


# ---- connecting: libpq gives no SQLSTATE, its words are read -------------------------------
def test_wrong_password_is_auth_failed(db: DbTarget) -> None:
    wrong = replace(db, password="Wrong-Secret-4711")
    err = _connect_error(wrong)
    _check(err, AuthFailed, ExitCode.AUTH, wrong, db.password or "")
    assert "password authentication failed" in err.message


def test_wrong_password_through_sqlalchemy_is_the_same_error(
    db: DbTarget, moviectl_settings: Any
) -> None:
    from moviectl.infra.engine import make_engine

    wrong = replace(db, password="Wrong-Secret-4712")
    engine = make_engine(moviectl_settings, target=wrong, pooled=False)
    try:
        with pytest.raises(AuthFailed) as caught, db_errors(wrong, 5), engine.connect():
            pass
    finally:
        engine.dispose()
    _check(caught.value, AuthFailed, ExitCode.AUTH, wrong, db.password or "")


def test_missing_database(db: DbTarget) -> None:
    missing = db.with_database(f"no_such_db_{secrets.token_hex(3)}")
    err = _connect_error(missing)
    _check(err, DatabaseMissing, ExitCode.AUTH, missing)


def test_no_password_supplied(
    db: DbTarget, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    bare = replace(db, password=None)
    err = _connect_error(bare)
    _check(err, AuthFailed, ExitCode.AUTH, bare, db.password or "")
    assert "MOVIE_DB_PASSWORD" in (err.hint or "")


def test_no_connect_privilege_is_permission_denied(db: DbTarget, make_role: Any) -> None:
    role = make_role()
    with psycopg.connect(db.url(masked=False), autocommit=True) as c:
        c.execute(f'REVOKE CONNECT ON DATABASE "{db.database}" FROM PUBLIC')
    err = _connect_error(role)
    _check(err, PermissionDenied, ExitCode.AUTH, role)
    assert "permission denied for database" in err.message


def test_connection_limit_0_is_no_free_slot(make_role: Any) -> None:
    """The server sends 53300 (too_many_connections); libpq passes on only its words."""
    role = make_role("CONNECTION LIMIT 0")
    with pytest.raises(psycopg.OperationalError) as raw:
        psycopg.connect(**role.libpq_params(5)).close()
    assert raw.value.sqlstate is None  # what this module's text table is for
    assert pgerrors.condition(raw.value) == "53300"
    err = _connect_error(role)
    _check(err, Unreachable, ExitCode.UNREACHABLE, role)
    assert "too many connections for role" in err.message


@pytest.mark.parametrize(
    ("change", "cls", "says"),
    [
        ({"host": "127.0.0.1", "port": 1}, Unreachable, "Connection refused"),
        ({"host": "no-such-host.invalid"}, Unreachable, "does not resolve"),
        ({"params": (("sslmode", "require"),)}, Unreachable, "does not offer TLS"),
        ({"params": (("sslmode", "bogus"),)}, ConfigError, "invalid sslmode value"),
        ({"params": (("service", "nope"),)}, ConfigError, 'service "nope" not found'),
    ],
    ids=[
        "refused port",
        "no such host",
        "TLS required, none offered",
        "bad libpq option",
        "unknown service",
    ],
)
def test_libpq_failures(db: DbTarget, change: dict[str, Any], cls: Any, says: str) -> None:
    t = replace(db, **change)
    err = _connect_error(t)
    _check(err, cls, cls.exit_code, t)
    assert says in err.message


# ---- statements: the server's SQLSTATE decides --------------------------------------------
def test_permission_denied_on_a_table(make_role: Any) -> None:
    role = make_role()
    with connect(role) as c, pytest.raises(PermissionDenied) as caught, db_errors(role):
        c.execute("SELECT * FROM movies")
    _check(caught.value, PermissionDenied, ExitCode.AUTH, role)
    assert "permission denied for table movies" in caught.value.message
    assert role.user in caught.value.message


@contextmanager
def _locked(db: DbTarget, table: str = "movies") -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(db.url(masked=False)) as holder:
        holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield holder
        holder.rollback()


def test_lock_timeout_is_lock_busy(db: DbTarget) -> None:
    with _locked(db), connect(db) as c:
        c.execute("SET lock_timeout = '100ms'")
        with pytest.raises(psycopg.Error) as raw:
            c.execute("SELECT count(*) FROM movies")
    # the migrations' own rule reads the same SQLSTATE (and so still retries, then names
    # the blocker itself)
    assert pgerrors.is_lock_timeout(raw.value) and timeouts.is_lock_timeout(raw.value)
    err = pgerrors.classify(raw.value, db)
    assert err is not None
    _check(err, LockBusy, ExitCode.BUSY, db)
    assert "lock_timeout" in err.message


def test_statement_timeout_and_a_cancel(db: DbTarget) -> None:
    with connect(db) as c:
        c.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.Error) as raw:
            c.execute("SELECT pg_sleep(5)")
    assert pgerrors.is_statement_timeout(raw.value) and timeouts.is_statement_timeout(raw.value)
    err = pgerrors.classify(raw.value, db)
    assert err is not None
    _check(err, StatementCanceled, ExitCode.FAILED, db)
    assert "statement timeout" in err.message

    with connect(db) as victim, connect(db) as admin:
        pid = victim.info.backend_pid

        def cancel_once_it_sleeps() -> None:
            # A cancel that reaches an idle backend is dropped (it is reading its next
            # command): a fixed 0.3 s timer lost that race on a loaded machine, and the
            # sleep ran its full 10 s uncancelled. Cancel once the statement runs.
            wait_for(
                lambda: admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                    "AND query LIKE 'SELECT pg_sleep%%'",
                    (pid,),
                ).fetchone(),
                30,
            )
            admin.execute("SELECT pg_cancel_backend(%s)", (pid,))

        canceller = threading.Thread(target=cancel_once_it_sleeps)
        canceller.start()
        try:
            with pytest.raises(StatementCanceled) as caught, db_errors(db):
                victim.execute("SELECT pg_sleep(10)")
        finally:
            canceller.join()
    _check(caught.value, StatementCanceled, ExitCode.FAILED, db)
    assert "user request" in caught.value.message


def test_terminated_session_is_unreachable(db: DbTarget) -> None:
    with connect(db) as victim, connect(db) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        with pytest.raises(Unreachable) as caught, db_errors(db):
            victim.execute("SELECT 1")
    _check(caught.value, Unreachable, ExitCode.UNREACHABLE, db)


def test_deadlock_is_lock_busy(db: DbTarget) -> None:
    with connect(db) as setup:
        setup.execute("CREATE TABLE dl (id int PRIMARY KEY)")
        setup.execute("INSERT INTO dl VALUES (1), (2)")
    failures: list[MoviectlError] = []

    def update(c: psycopg.Connection[Any], row: int) -> None:
        try:
            with db_errors(db):
                c.execute("UPDATE dl SET id = id WHERE id = %s", (row,))
        except MoviectlError as exc:
            failures.append(exc)
            c.rollback()

    with connect(db, autocommit=False) as a, connect(db, autocommit=False) as b:
        a.execute("SET deadlock_timeout = '50ms'")
        update(a, 1)
        update(b, 2)
        second = threading.Thread(target=update, args=(b, 1))
        second.start()  # b waits for a's row 1 ...
        update(a, 2)  # ... and a for b's row 2: one of them is chosen to fail
        a.rollback()
        second.join(timeout=30)
        b.rollback()
    assert len(failures) == 1, [f.message for f in failures]
    _check(failures[0], LockBusy, ExitCode.BUSY, db)
    assert "deadlock" in failures[0].message


def test_read_only_transaction_is_permission_denied(db: DbTarget) -> None:
    with connect(db) as c, pytest.raises(PermissionDenied) as caught, db_errors(db):
        c.execute("SET default_transaction_read_only = on")
        c.execute("CREATE TABLE nope (x int)")
    _check(caught.value, PermissionDenied, ExitCode.AUTH, db)


# ---- what is not expected is a bug: exit 10 ----------------------------------------------
def test_an_undefined_table_is_internal(db: DbTarget) -> None:
    with connect(db) as c, pytest.raises(pg.UndefinedTable) as raw, db_errors(db):
        c.execute("SELECT * FROM no_such_table")  # db_errors lets it through, untouched
    assert pgerrors.classify(raw.value, db) is None
    handled = as_moviectl_error(raw.value)
    assert type(handled) is InternalError and handled.exit_code == ExitCode.INTERNAL
    assert "-v" in (handled.hint or "")
    err = translate_error(raw.value, db)
    assert type(err) is InternalError and "42P01" in err.message and db.where in err.message


def test_the_handler_reads_untranslated_errors_with_the_same_table(make_role: Any) -> None:
    """A driver error no command translated: the one handler classifies it by the same
    table, naming the connection the error came from."""
    role = make_role()
    with pytest.raises(psycopg.OperationalError) as raw:  # a connection attempt: psycopg
        psycopg.connect(**replace(role, password="Wrong-Secret-31").libpq_params(5))
    err = as_moviectl_error(raw.value)  # keeps host, port and database on the error
    _check(err, AuthFailed, ExitCode.AUTH, role, "Wrong-Secret-31")
    with psycopg.connect(**role.libpq_params(5)) as c, pytest.raises(pg.Error) as raw2:
        c.execute("SELECT * FROM movies")
    err = as_moviectl_error(raw2.value)  # a statement's error names no connection
    assert type(err) is PermissionDenied and err.exit_code == ExitCode.AUTH
    assert "permission denied for table movies" in err.message and role.password not in err.message


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        (pg.DiskFull, OutOfResources),
        (pg.OutOfMemory, OutOfResources),
        (pg.TooManyConnections, Unreachable),
        (pg.AdminShutdown, Unreachable),
        (pg.CrashShutdown, Unreachable),
        (pg.CannotConnectNow, Unreachable),
        (pg.ConnectionFailure, Unreachable),
        (pg.InvalidAuthorizationSpecification, AuthFailed),
        (pg.InvalidPassword, AuthFailed),
        (pg.InvalidCatalogName, DatabaseMissing),
        (pg.DatabaseDropped, DatabaseMissing),
        (pg.SerializationFailure, LockBusy),
        (pg.ObjectInUse, LockBusy),
        (pg.DataCorrupted, ServerFailed),
        (pg.IoError, ServerFailed),
    ],
)
def test_the_table(error: type[psycopg.Error], cls: type[MoviectlError]) -> None:
    """Conditions no test server produces on demand, by psycopg's classes (SQLSTATEs)."""
    t = DbTarget("db.example", 6543, "app", "Table-Secret-99", "movies")
    err = pgerrors.classify(error("the server's words"), t)
    assert err is not None
    _check(err, cls, cls.exit_code, t)


def test_what_is_not_expected_is_not_classified() -> None:
    """Constraints, syntax, schema, transaction state: moviectl's bugs. And an exception of
    moviectl's own that reads like a driver's is still a bug."""
    bugs = (pg.UniqueViolation, pg.SyntaxError, pg.UndefinedColumn, pg.InFailedSqlTransaction)
    assert [pgerrors.classify(b("the server's words")) for b in bugs] == [None] * len(bugs)
    assert pgerrors.classify(ValueError("permission denied for table movies")) is None
    assert type(as_moviectl_error(ValueError("connection refused"))) is InternalError


TO = 'connection to server at "h", port 5432 failed:'  # how pg_dump's lines begin


@pytest.mark.parametrize(
    ("line", "cls"),
    [
        (f"{TO} Connection refused", Unreachable),
        ("query failed: ERROR:  permission denied for table movies", PermissionDenied),
        (f'{TO} FATAL:  database "x" does not exist', DatabaseMissing),
        (f"{TO} FATAL:  the database system is starting up", Unreachable),
        (f"{TO} FATAL:  no pg_hba.conf entry for host", AuthFailed),
        ("aborting because of server version mismatch", MoviectlError),
    ],
)
def test_a_tools_words(line: str, cls: type[MoviectlError]) -> None:
    """pg_dump prints no SQLSTATE: its words go through the same table (``dump_process``)."""
    t = DbTarget("db.example", 6543, "app", "Tool-Secret-77", "movies")
    err = translate_error(RuntimeError(f"pg_dump: error: {line}"), t)
    assert type(err) is cls and err.exit_code == cls.exit_code, err.message
    assert "db.example:6543" in err.message and "movies" in err.message


# ---- seed: a bug exits 10; a row the database refuses is the file's -----------------------
SEED_BUG = """
import sys
from moviectl.core.seed import load

def broken(*args, **kwargs):
    raise ZeroDivisionError("a bug in the loader")

load._orm = broken
from moviectl.cli.entry import main
sys.argv = ["moviectl", *sys.argv[1:]]
main()
"""


def test_an_unexpected_error_in_seed_exits_10(movie_db_url: str, db: DbTarget) -> None:
    env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url)
    r = run_moviectl(env, "seed", "--sample", "3", python=SEED_BUG, timeout=120)
    assert r.returncode == 10, r.stdout + r.stderr
    assert "internal error: ZeroDivisionError: a bug in the loader" in r.stderr
    assert "-v" in r.stderr and "Traceback" not in r.stderr
    assert (db.password or "?") not in r.stdout + r.stderr
    r = run_moviectl(env, "--json", "seed", "--sample", "3", python=SEED_BUG, timeout=120)
    assert r.returncode == 10 and json.loads(r.stdout)["error"] == "InternalError"
    with psycopg.connect(movie_db_url) as c:
        rows = c.execute("SELECT status, error FROM seed_runs").fetchall()
    assert rows and all(r == ("failed", "a bug in the loader") for r in rows), rows


def test_a_row_the_database_refuses_is_a_bad_input_file(
    cli: Cli, movie_db_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("ALTER TABLE movies ADD CONSTRAINT no_sequels CHECK (title NOT LIKE '% 2')")
    data = tmp_path / "movies.csv"
    data.write_text("title,year,genre,rating\nJaws,1975,Thriller,8.1\nJaws 2,1978,Thriller,5.8\n")
    r = cli("--json", "seed", "--from", str(data))
    assert r.exit_code == 2, r.output
    doc = json.loads(r.stdout)
    assert doc["error"] == "InputFileError" and str(data) in doc["message"], doc
    assert "no_sequels" in doc["message"]
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone() == (0,)


def test_a_password_inside_the_database_name_leaves_the_name_whole() -> None:
    """The defaults (.env.example): password ``movie``, database ``movies``."""
    from moviectl.infra.conninfo import scrub
    from tests.ports import free_port

    port = free_port("127.0.0.1")
    t = DbTarget(host="127.0.0.1", port=port, user="movie", password="movie", database="movies")
    with pytest.raises(MoviectlError) as caught, connect(t, connect_timeout=2):
        pass
    assert f"127.0.0.1:{port}/movies" in caught.value.message, caught.value.message
    assert scrub("password=movie dbname=movies", "movie", ("movies",)) == (
        "password=*** dbname=movies"
    )
    assert scrub("password=movies", "movies", ("movies",)) == "password=***"
