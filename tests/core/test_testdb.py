from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

from moviectl.core import testdb
from moviectl.infra import admin
from moviectl.infra.errors import PermissionDenied, Refused
from moviectl.infra.settings import parse_db_url
from tests.conftest import Cli, subprocess_env


@pytest.fixture
def admin_cli(moviectl_admin_target):
    return Cli(
        {"MOVIE_DATABASE_URL": moviectl_admin_target.with_database("postgres").url(masked=False)}
    )


def _admin_conn(target):
    return psycopg.connect(**target.libpq_params(), autocommit=True)


def _databases_but_this_pools(target) -> set[str]:
    """Every database except this process's clone pool's, which its background thread drops
    as tests give them back (at any moment, unrelated to the test that looks)."""
    pool = testdb.pool_owner_tag()
    with _admin_conn(target) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        pools = {
            row["name"]
            for row in admin.databases_named_like(conn, testdb.TEST_PREFIX)
            if (row["mark"] or {}).get("owner") == pool
        }
    return names - pools


def test_the_fixture_database_is_migrated_and_private(movie_db_url):
    with psycopg.connect(movie_db_url) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
        assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == 0
        conn.execute("INSERT INTO movies (title, year, genre) VALUES ('Mine', 2001, 'Drama')")
        conn.commit()


def test_create_list_drop_through_the_cli(admin_cli):
    r = admin_cli("testdb", "create", "--ttl", "2h", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    name = doc["name"]
    assert name.startswith("movies_test_") and "***" in doc["url"]
    assert "full_url" not in doc and doc["expires_at"]

    r = admin_cli("testdb", "create", "--print-url")
    url = r.stdout.strip()
    other = parse_db_url(url)
    assert other.password and other.database.startswith("movies_test_")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('movies')").fetchone()[0] == "movies"

    r = admin_cli("testdb", "list", "--json")
    names = [d["name"] for d in json.loads(r.stdout)["databases"]]
    assert name in names and other.database in names

    r = admin_cli("testdb", "drop", name, other.database)
    assert r.exit_code == 0, r.output
    r = admin_cli("testdb", "list", "--json")
    names = [d["name"] for d in json.loads(r.stdout)["databases"]]
    assert name not in names and other.database not in names


@pytest.mark.parametrize(
    "name",
    [
        "postgres",
        "movies",
        "template1",
        'x"; DROP DATABASE movies; --',
        "movies_test_",
        "movies_test_zz",
    ],
)
def test_drop_refuses_names_outside_the_prefix(admin_cli, moviectl_admin_target, name):
    before = _databases_but_this_pools(moviectl_admin_target)
    r = admin_cli("testdb", "drop", name)
    assert r.exit_code == 5, r.output
    assert "refusing to drop" in r.stderr
    assert before <= _databases_but_this_pools(moviectl_admin_target)


def test_drop_refuses_an_unmarked_lookalike(admin_cli, moviectl_admin_target):
    name = "movies_test_0123456789abcdef"
    with _admin_conn(moviectl_admin_target) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        r = admin_cli("testdb", "drop", name)
        assert r.exit_code == 5 and "ownership mark" in r.stderr
        r = admin_cli("testdb", "drop", "--all", "--yes", "--json")
        assert name not in json.loads(r.stdout)["dropped"]
    finally:
        with _admin_conn(moviectl_admin_target) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))


def test_drop_all_needs_confirmation(admin_cli):
    r = admin_cli("testdb", "drop", "--all")
    assert r.exit_code == 5 and "--yes" in r.stderr


def test_drop_with_an_open_connection(moviectl_settings, moviectl_admin_target):
    db = testdb.create(moviectl_settings, target=moviectl_admin_target)
    conn = psycopg.connect(db.full_url)
    testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()


def test_user_without_createdb_gets_the_alter_role_hint(moviectl_settings, moviectl_admin_target):
    role = f"nocreate_{time.monotonic_ns()}"
    with _admin_conn(moviectl_admin_target) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' NOCREATEDB").format(sql.Identifier(role))
        )
    try:
        target = moviectl_admin_target.__class__(
            moviectl_admin_target.host, moviectl_admin_target.port, role, "pw", "postgres"
        )
        tpl = testdb.ensure_template(moviectl_settings, moviectl_admin_target)
        with pytest.raises(PermissionDenied) as err:
            testdb.create(moviectl_settings, target=target, template=tpl)
        assert f'ALTER ROLE "{role}" CREATEDB' in err.value.hint
    finally:
        with _admin_conn(moviectl_admin_target) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_ttl_and_prune(moviectl_settings, moviectl_admin_target):
    keep = testdb.create(
        moviectl_settings, target=moviectl_admin_target, ttl=testdb.parse_ttl("1h")
    )
    short = testdb.create(
        moviectl_settings, target=moviectl_admin_target, ttl=testdb.parse_ttl("1s")
    )
    later = datetime.now(UTC) + timedelta(seconds=2)  # the 1s one has expired by then
    from moviectl.core.testdb_prune import prune

    result = prune(moviectl_settings, target=moviectl_admin_target, now=later)
    assert short.name in result.dropped and keep.name not in result.dropped
    testdb.drop(moviectl_settings, [keep.name], target=moviectl_admin_target)
    with pytest.raises(Exception, match="bad duration"):
        testdb.parse_ttl("soon")


def test_refuses_names_through_the_api_too(moviectl_settings, moviectl_admin_target):
    with pytest.raises(Refused):
        testdb.drop(
            moviectl_settings, [moviectl_settings.target().database], target=moviectl_admin_target
        )


def test_parallel_builders_build_the_template_once(moviectl_settings, moviectl_admin_target):
    url = moviectl_admin_target.url(masked=False)
    env = subprocess_env(MOVIE_DATABASE_URL_TEST=url)
    code = "from moviectl.infra.settings import load_settings; from moviectl.core import testdb; print(testdb.ensure_template(load_settings()))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len({o[0].strip() for o in outs}) == 1


def test_half_built_template_is_detected_and_rebuilt(
    moviectl_settings, moviectl_admin_target, monkeypatch
):
    h = f"{time.monotonic_ns():012x}"[-12:]
    monkeypatch.setattr(testdb, "template_hash", lambda: h)
    name = testdb.TEMPLATE_PREFIX + h
    with _admin_conn(moviectl_admin_target) as conn:  # what a killed builder leaves behind
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.comment_database(
            conn, name, admin.make_mark("template", state="building", created="x")
        )
    try:
        assert testdb.ensure_template(moviectl_settings, moviectl_admin_target) == name
        db = testdb.create(moviectl_settings, target=moviectl_admin_target, template=name)
        with psycopg.connect(db.full_url) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone()[0] == "0002"
        testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)
    finally:
        with _admin_conn(moviectl_admin_target) as conn:
            admin.drop_database_force(conn, name)


def test_stale_templates_are_pruned(moviectl_settings, moviectl_admin_target):
    stale = testdb.TEMPLATE_PREFIX + "0" * 12
    with _admin_conn(moviectl_admin_target) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(stale)))
        admin.comment_database(conn, stale, admin.make_mark("template", state="ready", created="x"))
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true").format(sql.Identifier(stale))
        )
    from moviectl.core.testdb_prune import prune

    result = prune(moviectl_settings, target=moviectl_admin_target)
    assert stale in result.dropped
    current = testdb.TEMPLATE_PREFIX + testdb.template_hash()
    assert current not in result.dropped


def test_template_hash_follows_the_migrations(monkeypatch, tmp_path):
    import moviectl.core.migrations.scripts as mig

    before = testdb.template_hash()
    fake = tmp_path / "alembic"
    (fake / "versions").mkdir(parents=True)
    src = mig.script_location()
    for p in [*src.glob("versions/*.py"), src / "env.py"]:
        (fake / p.relative_to(src)).write_bytes(p.read_bytes())
    monkeypatch.setenv("MOVIE_MIGRATIONS_DIR", str(fake))
    assert testdb.template_hash() == before
    (fake / "versions" / "0002_more.py").write_text("# a new migration\n")
    assert testdb.template_hash() != before


def test_template_hash_follows_a_service_s_models(monkeypatch, tmp_path):
    """A service's configured metadata module names its templates, not moviectl's models."""
    (tmp_path / "svc_models_for_hash.py").write_text("COLUMNS = ['title']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = testdb.template_hash()
    monkeypatch.setenv("MOVIE_METADATA", "svc_models_for_hash:metadata")
    theirs = testdb.template_hash()
    assert theirs != before
    (tmp_path / "svc_models_for_hash.py").write_text("COLUMNS = ['title', 'director']\n")
    assert testdb.template_hash() != theirs


def test_create_with_seed_sample(admin_cli):
    r = admin_cli("testdb", "create", "--seed-sample", "5", "--print-url")
    assert r.exit_code == 0, r.output
    url = r.stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM movies").fetchone()[0] == 5
    assert admin_cli("testdb", "drop", parse_db_url(url).database).exit_code == 0


def test_an_unmarked_template_name_is_never_dropped(
    moviectl_settings, moviectl_admin_target, monkeypatch
):
    """Someone else's database that happens to be named like our template stays."""
    h = f"{time.monotonic_ns():012x}"[-12:]
    monkeypatch.setattr(testdb, "template_hash", lambda: h)
    name = testdb.TEMPLATE_PREFIX + h
    with _admin_conn(moviectl_admin_target) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = moviectl_admin_target.with_database(name).url(masked=False)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE theirs (v text)")
        c.execute("INSERT INTO theirs VALUES ('their data')")
    try:
        with pytest.raises(Refused, match="no moviectl template mark"):
            testdb.create(moviectl_settings, target=moviectl_admin_target)
        with psycopg.connect(url) as c:
            assert c.execute("SELECT v FROM theirs").fetchone()[0] == "their data"
    finally:
        with _admin_conn(moviectl_admin_target) as conn:
            admin.drop_database_force(conn, name)


def test_template_hash_follows_the_models_source(monkeypatch, tmp_path):
    assert "moviectl.infra.models" in testdb.MODEL_SOURCES
    (tmp_path / "fake_models_for_hash.py").write_text("COLUMNS = ['title']\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(testdb, "MODEL_SOURCES", ("fake_models_for_hash",))
    before = testdb.template_hash()
    assert testdb.template_hash() == before
    (tmp_path / "fake_models_for_hash.py").write_text("COLUMNS = ['title', 'year']\n")
    assert testdb.template_hash() != before


_HEAVY_PROBE = """
import sys
from moviectl.cli.entry import main
sys.argv = ["moviectl", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("sqlalchemy", "sqlmodel", "alembic") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def test_testdb_create_list_drop_import_no_orm_and_no_alembic(
    moviectl_admin_target, moviectl_template
):
    """Start-up: the template exists, so these commands need neither SQLAlchemy, SQLModel
    nor Alembic, and import none of them."""
    env = subprocess_env(MOVIE_DATABASE_URL=moviectl_admin_target.url(masked=False))

    def moviectl(*args):
        r = subprocess.run(
            [sys.executable, "-c", _HEAVY_PROBE, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert "HEAVY=\n" in r.stderr, r.stderr
        return r.stdout

    name = json.loads(moviectl("testdb", "create", "--json"))["name"]
    assert name in [
        d["name"] for d in json.loads(moviectl("testdb", "list", "--json"))["databases"]
    ]
    assert name in json.loads(moviectl("testdb", "drop", name, "--json"))["dropped"]


def test_a_pool_whose_thread_failed_says_why_at_the_next_take(moviectl_settings):
    from moviectl.core.testdb_pool import ClonePool
    from moviectl.infra.errors import Unreachable
    from moviectl.infra.settings import DbTarget
    from tests.ports import free_port

    nobody = DbTarget("127.0.0.1", free_port(), "postgres", "x", "postgres")
    pool = ClonePool(moviectl_settings, nobody, "movies_tpl_000000000000", size=2, expected=2)
    started = time.monotonic()
    with pytest.raises(Unreachable):
        pool.take(timeout=60)
    assert time.monotonic() - started < 15  # not the take's timeout
    pool.close()


_BUG_IN_DROP = """
import sys
from moviectl.cli.entry import main
from moviectl.core import testdb

def broken(conn, name):
    raise KeyError("a bug, not the user's doing")

testdb.drop_database_force = broken  # a bug inside the drop: not a driver error
sys.argv = ["moviectl", *sys.argv[1:]]
main()
"""


def test_a_bug_inside_drop_is_an_internal_error_not_a_user_error(
    moviectl_settings, moviectl_admin_target
):
    """Only the driver's errors become user errors (exit 1-9); a bug exits 10."""
    from tests.conftest import run_moviectl

    db = testdb.create(moviectl_settings, target=moviectl_admin_target)
    try:
        env = subprocess_env(MOVIE_DATABASE_URL=moviectl_admin_target.url(masked=False))
        r = run_moviectl(env, "testdb", "drop", db.name, python=_BUG_IN_DROP)
        assert r.returncode == 10, r.stderr
        assert "KeyError" in r.stderr
    finally:
        testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)


def test_a_driver_error_inside_drop_is_still_the_users(moviectl_settings, moviectl_admin_target):
    """A role that may create databases but does not own this one: the server refuses the
    DROP (a real driver error), which stays a user error (exit 4, no traceback)."""
    role = f"notowner_{time.monotonic_ns()}"
    with _admin_conn(moviectl_admin_target) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'pw' CREATEDB").format(sql.Identifier(role))
        )
    db = testdb.create(moviectl_settings, target=moviectl_admin_target)
    try:
        theirs = moviectl_admin_target.__class__(
            moviectl_admin_target.host, moviectl_admin_target.port, role, "pw", "postgres"
        )
        r = Cli({"MOVIE_DATABASE_URL": theirs.url(masked=False)})("testdb", "drop", db.name)
        assert r.exit_code == 4, r.output
        assert "Traceback" not in r.output
    finally:
        testdb.drop(moviectl_settings, [db.name], target=moviectl_admin_target)
        with _admin_conn(moviectl_admin_target) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
