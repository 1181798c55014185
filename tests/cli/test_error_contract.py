"""The error contract, command by command: in each situation the documented exit code, at
most one `error:` line (and its hint) on stderr, never a traceback, and under --json exactly
one JSON document on stdout.

Situations: the server is unreachable, the password is wrong, the server is full
(max_connections), the role lacks privileges, the command line is wrong. `db shell` hands
the terminal to psql/pgcli and is covered for usage errors only.
"""

from __future__ import annotations

import json
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import typer.main

from moviectl.cli.app import app
from moviectl.core.inspect.registry import QUERIES as INSPECT_QUERIES
from moviectl.core.servers.cluster import TEST_OPTIONS, EmbeddedServer
from tests.conftest import Cli, copy_migrations
from tests.ports import free_port


def _leaf_commands() -> list[tuple[str, ...]]:
    def walk(group, prefix):  # type: ignore[no-untyped-def]
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                if not cmd.no_args_is_help:
                    yield (*prefix, name)
                yield from walk(cmd, (*prefix, name))
            else:
                yield (*prefix, name)

    return list(walk(typer.main.get_command(app), ()))


LEAVES = _leaf_commands()


def _args(cmd: tuple[str, ...], backup: str, out: str) -> list[str]:
    extra = {
        ("up",): ["--timeout", "1"],
        ("db", "up"): ["--timeout", "1"],
        ("migrate", "down"): ["--to", "base", "--yes"],
        ("migrate", "redo"): ["--yes"],
        ("migrate", "stamp"): ["head"],
        ("db", "reset"): ["--yes"],
        ("migrate", "new"): ["add director"],
        ("seed",): ["--sample", "3"],
        ("backup",): ["--output", out],
        ("backup", "verify"): [backup],
        ("backup", "prune"): ["--keep", "1", "--yes"],
        ("backup", "pin"): [backup, "--unpin"],  # leaves the shared backup as it was
        ("backup", "copy"): [backup, "--to", f"{out}/copy"],
        ("backup", "keygen"): [f"{out}/signing.key"],
        ("restore",): [backup],
        ("testdb", "drop"): ["movies_test_0123456789abcdef"],
        ("inspect", "kill"): ["1", "--yes"],
        ("pitr", "mark"): ["before-contract"],
        ("pitr", "promote"): ["no-such-restore", "--yes"],
        ("pitr", "discard"): ["no-such-restore", "--yes"],
        ("pitr", "prune"): ["--keep", "1", "--yes"],
        ("db", "upgrade"): ["--to", "18", "--dry-run"],
        ("db", "admin"): ["--stop"],  # a start is tests/core/test_pgadmin.py's (a minute each)
    }
    return [*cmd, *extra.get(cmd, [])]


# commands that never reach the server, whatever it is like
NO_SERVER = {
    ("down",): 5,  # the external backend: moviectl does not manage it
    ("db", "down"): 5,
    ("db", "logs"): 5,
    ("backup", "list"): 0,
    ("backup", "prune"): 0,
    ("backup", "pin"): 0,  # the manifest and the pin are files: no server
    ("backup", "copy"): 0,
    ("backup", "keygen"): 0,  # writes a key pair, nothing else
    ("config", "show"): 0,  # the protection mark reads as "unknown"
    ("init", "ci"): 0,  # writes a workflow file, nothing else
    ("doctor",): 1,  # it reports the problem as a finding
    ("pitr", "script"): 0,  # prints the archive script
    ("pitr", "promote"): 2,  # no such restored cluster (and not a managed server)
    ("pitr", "discard"): 2,  # no such restored cluster
    ("pitr", "prune"): 0,  # the repository only
    ("db", "upgrade"): 2,  # the embedded backend only: refused for an external server
    ("db", "admin"): 0,  # --stop: no pgAdmin runs, nothing to stop
}
EXPECTED = {
    "unreachable": {"*": 3, ("migrate", "lint"): 0},  # lint falls back to offline
    "wrong password": {"*": 4},
    "full server": {"*": 3, ("migrate", "lint"): 0},
    "no privileges": {
        "*": 4,
        ("db", "up"): 0,  # logging in works: the role may connect
        ("db", "status"): 0,
        ("testdb", "list"): 0,
        ("testdb", "prune"): 0,
        ("testdb", "template"): 0,
        ("testdb", "drop"): 2,  # the name does not exist
        ("health",): 4,
        # the statistics views are everyone's; other roles' sessions show as hidden
        **{("inspect", name): 0 for name in INSPECT_QUERIES},
        ("inspect", "outliers"): 1,  # no pg_stat_statements here: one line, how to enable it
        ("inspect", "calls"): 1,
        ("inspect", "diagnose"): 1,  # a warning: the role does not see all sessions
        ("inspect", "kill"): 2,  # pid 1 is no session
        ("db", "top"): 0,
        ("pitr", "enable"): 0,  # only the setup to apply: the role may read pg_stat_archiver
        ("pitr", "status"): 1,  # a warning: archiving is off on that server
    },
}


@pytest.fixture(scope="module")
def backup_file(tmp_path_factory, moviectl_admin_target) -> str:
    """A real backup (of a fresh test database) for verify/restore to start from."""
    from moviectl.core import testdb
    from moviectl.infra.settings import load_settings

    settings = load_settings(use_dotenv=False)
    db = testdb.create(settings, target=moviectl_admin_target)
    out = tmp_path_factory.mktemp("contract-backups")
    r = Cli({"MOVIE_DATABASE_URL": db.full_url or ""})("backup", "--output", str(out), "--json")
    assert r.exit_code == 0, r.output
    testdb.drop(settings, [db.name], target=moviectl_admin_target)
    return str(json.loads(r.stdout)["path"])


@pytest.fixture(scope="module")
def full_server(tmp_path_factory) -> Iterator[str]:
    """A server of its own whose every connection slot is taken."""
    options = {
        **TEST_OPTIONS,
        "max_connections": "4",
        "superuser_reserved_connections": "0",
        "reserved_connections": "0",
    }
    srv = EmbeddedServer(
        tmp_path_factory.mktemp("full"), free_port(), "postgres", "fpw", options=options
    )
    srv.start()
    url = f"postgresql://postgres:fpw@127.0.0.1:{srv.port}/postgres"
    held = []
    try:
        while True:
            try:
                held.append(psycopg.connect(url, autocommit=True))
            except psycopg.OperationalError:
                break
        assert held, "could not take any slot"
        yield url
    finally:
        for c in held:
            c.close()
        srv.stop("immediate")


@pytest.fixture(scope="module")
def weak_role(moviectl_admin_target) -> Iterator[str]:
    """A role that may log in and nothing else (no CREATEDB, no table privileges)."""
    from moviectl.core import testdb
    from moviectl.infra.settings import load_settings

    settings = load_settings(use_dotenv=False)
    db = testdb.create(settings, target=moviectl_admin_target)
    role, pw = f"weak_{secrets.token_hex(3)}", secrets.token_hex(8)
    admin = moviectl_admin_target.url(masked=False)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{pw}' NOCREATEDB")
    t = moviectl_admin_target
    yield f"postgresql://{role}:{pw}@{t.host}:{t.port}/{db.name}"
    testdb.drop(settings, [db.name], target=moviectl_admin_target)
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"DROP OWNED BY {role}")
        c.execute(f"DROP ROLE {role}")


def _situation_url(situation: str, movie_db_url: str, full_server: str, weak_role: str) -> str:
    if situation == "unreachable":
        return "postgresql://movie:Contract-Pw1@127.0.0.1:1/movies"
    if situation == "wrong password":
        base = movie_db_url.split("@", 1)[1]
        user = movie_db_url.split("://", 1)[1].split(":", 1)[0]
        return f"postgresql://{user}:Wrong-Pw-9@{base}"
    if situation == "full server":
        return full_server
    return weak_role


def _check(r, expected: int, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert r.exit_code == expected, (args, r.exit_code, r.output)
    assert "Traceback" not in r.output, (args, r.output)
    assert r.stderr.count("error:") <= 1, (args, r.stderr)
    doc = json.loads(r.stdout)  # exactly one JSON document (json.loads rejects a second)
    assert isinstance(doc, dict)
    if expected not in (0, 1) and "ok" in doc and doc.get("error"):
        assert doc["exit_code"] == expected


@pytest.mark.parametrize("situation", list(EXPECTED))
def test_every_command_in_every_situation(
    situation, movie_db_url, full_server, weak_role, backup_file, tmp_path
):
    url = _situation_url(situation, movie_db_url, full_server, weak_role)
    cli = Cli(
        {
            "MOVIE_DATABASE_URL": url,
            "MOVIE_DATABASE_URL_TEST": url,
            "MOVIE_DB_BACKEND": "external",
            "MOVIE_BACKUP_DIR": str(tmp_path / "backups"),
            "MOVIE_CONNECT_TIMEOUT": "2",
            "MOVIE_MIGRATIONS_DIR": str(copy_migrations(tmp_path)),  # `migrate new` writes there
        }
    )
    table = EXPECTED[situation]
    for cmd in LEAVES:
        if cmd == ("db", "shell"):
            continue
        args = _args(cmd, backup_file, str(tmp_path))
        expected = NO_SERVER.get(cmd, table.get(cmd, table["*"]))
        r = cli("--json", *args)
        _check(r, expected, args)


@pytest.mark.parametrize("cmd", LEAVES, ids=[" ".join(c) for c in LEAVES])
def test_a_usage_error_is_2_and_one_json_document(cmd):
    r = Cli()("--json", *cmd, "--no-such-flag")
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["error"] == "UsageError"
    assert "Traceback" not in r.output


@pytest.mark.parametrize("json_flag", [(), ("--json",)], ids=["text", "json"])
def test_a_usage_error_keeps_exit_2_with_stderr_closed(json_flag):
    """`moviectl [--json] nosuchcmd 2>&-` exited 1: the message's write to the closed
    stderr failed after the JSON document (or instead of Typer's box) was written."""
    argv = " ".join([shlex.quote(sys.executable), "-m", "moviectl", *json_flag, "nosuchcmd"])
    r = subprocess.run(
        ["sh", "-c", f"exec {argv} 2>&-"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2, r.stdout
    if json_flag:
        assert json.loads(r.stdout)["error"] == "UsageError"


def test_json_given_a_value_is_a_usage_error_in_json():
    r = Cli()("--json=1", "health")
    assert r.exit_code == 2 and json.loads(r.stdout)["error"] == "UsageError", r.output


def test_documented_reproducers_give_one_line_and_their_code(tmp_path):
    cli = Cli({"MOVIE_DB_PORT": "1", "MOVIE_DB_BACKEND": "external"})
    cases = [
        (["seed", "--sample", "99999999999999999999"], 2),
        (["seed", "--sample", "3", "--random-seed", "1180591620717411303424"], 2),
        (["testdb", "create", "--ttl", "99999999999d"], 2),
        (["testdb", "create", "--ttl", "999999999d"], 2),
        (["testdb", "prune", "--older-than", "99999999999d"], 2),
        (["migrate", "--to", ""], 2),
        (["backup", "-Z", "bogus"], 2),
        (["backup", "-o", "/proc"], 2),
        (["health", "--serve", "8", "--bind", "no-such-host.invalid"], 2),
        (["--version"], 0),
        (["migrate", "--sql"], 0),
    ]
    for args, code in cases:
        r = cli("--json", *args)
        assert r.exit_code == code, (args, r.output)
        assert "Traceback" not in r.output
        json.loads(r.stdout)
    r = Cli({"MOVIE_CONNECT_TIMEOUT": "99999999999999999999"})("--json", "health")
    assert r.exit_code == 2 and json.loads(r.stdout)["exit_code"] == 2
    bad = Path(tmp_path / "x.dump")
    bad.write_bytes(b"x")
    for field, value in [
        ("sha256", 12345),
        ("server_major", "eighteen"),
        ("row_counts", [1]),
        ("finished_at", 5),
    ]:
        man = {
            "file": "x.dump",
            "format": "custom",
            "sha256": "0" * 64,
            "size_bytes": 1,
            "database": "movies",
            "server_version": "18",
            "server_major": 18,
            "pg_dump_version": "18",
            "alembic_revision": "0002",
            "row_counts": {},
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:00:00+00:00",
            "seconds": 1.0,
            field: value,
        }
        Path(str(bad) + ".manifest.json").write_text(json.dumps(man))
        for args in (["restore", str(bad)], ["backup", "verify", str(bad)]):
            r = cli("--json", *args)
            assert r.exit_code == 2 and field in json.loads(r.stdout)["message"], (field, r.output)
        r = cli("--json", "backup", "list", "--dir", str(tmp_path))
        assert r.exit_code == 0, r.output


@pytest.mark.parametrize(
    ("body", "line", "kind"),
    [
        ("def upgrade(:\n    pass\n", 7, "SyntaxError"),
        ("def upgrade():\n    undefined_name()\n\ndef downgrade():\n    pass\n", 8, "NameError"),
    ],
)
def test_a_broken_migration_script_is_named_not_a_bug_in_moviectl(cli, tmp_path, body, line, kind):
    """The project's own migration code failing is its file and line, exit 1, one line."""
    scripts = copy_migrations(tmp_path)
    bad = scripts / "versions" / "0003_bad.py"
    bad.write_text(
        f'"""bad\n\nRevision ID: 0003\n"""\nrevision = "0003"\ndown_revision = "0002"\n{body}'
    )
    for args in (["migrate", "history"], ["migrate"]):
        r = cli("--json", *args, MOVIE_MIGRATIONS_DIR=str(scripts))
        if kind == "NameError" and args == ["migrate", "history"]:
            assert r.exit_code == 0, r.output  # it compiles: listing works
            continue
        assert r.exit_code == 1, r.output
        doc = json.loads(r.stdout)
        assert doc["message"].startswith(f"migration script {bad} failed at line {line}: {kind}")
        assert "Traceback" not in r.output and "bug in moviectl" not in r.output
