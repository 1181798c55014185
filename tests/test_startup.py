"""Start-up: the commands that need no ORM and no Alembic never import them, and the fast
paths (`health`'s one-shot forms, a scripted `backup`) answer as the full CLI does.

Structure, not timing (docs/performance.md has the times): each command runs in its own
interpreter against a real database and reports the top-level modules it loaded.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from moviectl.cli.entry import backup_form, fast_form
from tests.conftest import subprocess_env

ORM = {"sqlalchemy", "sqlmodel", "alembic"}
# what the fast path of `health --live` never loads (a healthcheck runs it every few seconds)
NOT_LIVE = ORM | {"psycopg", "pydantic", "pydantic_settings", "typer", "rich"}
NOT_FAST = ORM | {"typer", "rich", "click"}  # `health` [--ready] [--json] without a terminal

# Runs the real entry point (as `python -m moviectl`), then names what it loaded on stderr.
PROBE = """
import json, runpy, sys
sys.argv = ["moviectl", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("moviectl", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
roots = sorted({name.split(".")[0] for name in sys.modules})
sys.stderr.write("\\nLOADED " + json.dumps({"code": code, "modules": roots}) + "\\n")
"""


def loaded(args: list[str], cwd: Path, **env: str) -> tuple[int, set[str], str]:
    """(exit code, top-level modules loaded, stdout) of ``moviectl ARGS`` in a new process."""
    code, mods, out, _ = loaded_with_stderr(args, cwd, **env)
    return code, mods, out


def loaded_with_stderr(args: list[str], cwd: Path, **env: str) -> tuple[int, set[str], str, str]:
    """``loaded``, and what the command wrote on stderr."""
    res = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        env=subprocess_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in res.stderr, res.stderr
    err, marker = res.stderr.rsplit("\nLOADED ", 1)
    doc = json.loads(marker)
    return doc["code"], set(doc["modules"]), res.stdout, err


# `health --live` as the console script runs it; names the modules it added to what the
# interpreter had loaded at start (this probe itself imports nothing else).
LIVE_PROBE = """
import sys
sys.argv = ["moviectl", "health", "--live"]
before = set(sys.modules)
from moviectl.cli.entry import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
sys.stderr.write("\\nLOADED " + " ".join([repr(code), *sorted(set(sys.modules) - before)]))
"""
# everything `health --live` imports: entry, health_text, libpq_syntax and probe (and their
# packages), and two small modules of the standard library's. Not dataclasses, typing, enum, re, pathlib, socket, urllib or json (each one
# ~3-13 ms, against ~8 ms for the whole interpreter): errors, conninfo and core.health.checks
# stay out (the errors' enum comes in only when a setting is rejected).
LIVE_IMPORTS = {
    "moviectl",
    "moviectl.cli",
    "moviectl.cli.entry",
    "moviectl.cli.health_text",
    "moviectl.infra",
    "moviectl.infra.libpq_syntax",
    "moviectl.infra.probe",
    "__future__",
    "_socket",
}


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({}, 0),  # the movie database: accepting
        ({"MOVIE_DATABASE_URL": "postgresql://u:p%40ss@/db?host=/nonexistent&port=5"}, 3),
        ({"MOVIE_DATABASE_URL": None, "MOVIE_DB_PORT": "1"}, 3),  # defaults, nobody listening
    ],
)
def test_live_imports_only_what_it_asks_with(movie_db_url, tmp_path, env, code):
    env = {k: v for k, v in {"MOVIE_DATABASE_URL": movie_db_url, **env}.items() if v is not None}
    res = subprocess.run(
        [sys.executable, "-c", LIVE_PROBE],
        env=subprocess_env(**env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    exit_code, *mods = res.stderr.rsplit("LOADED ", 1)[1].split()
    assert exit_code == str(code), res.stdout + res.stderr
    assert set(mods) == LIVE_IMPORTS, set(mods) ^ LIVE_IMPORTS


def test_live_exit_codes_are_the_error_codes():
    """probe.py names the reachable check's exit codes without importing errors.py."""
    from moviectl.infra import probe
    from moviectl.infra.errors import ExitCode

    assert (probe.FAILED_EXIT, probe.UNREACHABLE_EXIT) == (ExitCode.FAILED, ExitCode.UNREACHABLE)


@pytest.mark.parametrize(
    "text", ["", "abc-_.~09", "a b/c@d:e?f=g&h%i", "é€\u00a0", "/tmp/s,t", "[::1]"]
)
def test_quote_is_urllibs(text):
    """``libpq_syntax.quote`` builds the displayed URL without urllib (~7 ms to import)."""
    from urllib.parse import quote as urllib_quote

    from moviectl.infra.libpq_syntax import quote

    assert quote(text) == urllib_quote(text, safe="")


def test_health_paths_import_no_orm(movie_db_url, tmp_path):
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    for args in (["health"], ["--json", "health"], ["health", "--ready", "--json"]):
        code, mods, _ = loaded(args, tmp_path, **url)
        assert code == 0 and mods & NOT_FAST == set(), (args, mods & NOT_FAST)
        assert "psycopg" in mods  # it did log in
    code, mods, _ = loaded(["health", "--live"], tmp_path, **url)
    assert code == 0 and mods & NOT_LIVE == set(), mods & NOT_LIVE
    # the full CLI (Typer, pydantic-settings) runs the same checks, still without the ORM
    for args in (["health"], ["health", "--check", "query", "--check", "migrations"]):
        code, mods, _ = loaded(args, tmp_path, MOVIECTL_NO_FASTPATH="1", **url)
        assert code == 0 and "typer" in mods and mods & ORM == set(), (args, mods & ORM)


def test_backup_verify_restore_status_and_copy_seed_import_no_orm(movie_db_url, tmp_path):
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    code, mods, _ = loaded(["seed", "--sample", "1500"], tmp_path, **url)  # COPY (> 1000)
    assert code == 0 and mods & ORM == set(), mods & ORM
    code, mods, out = loaded(["--json", "backup", "--output", str(tmp_path)], tmp_path, **url)
    assert code == 0 and mods & ORM == set(), mods & ORM
    path = json.loads(out)["path"]
    code, mods, _ = loaded(["backup", "verify", path], tmp_path, **url)
    assert code == 0 and mods & ORM == set(), mods & ORM
    into = "movies_startup_" + Path(path).stem[-6:]
    try:
        code, mods, _ = loaded(["restore", path, "--into", into], tmp_path, **url)
        assert code == 0 and mods & ORM == set(), mods & ORM
    finally:
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            from moviectl.infra.admin import drop_database_force

            drop_database_force(c, into)
    code, mods, _ = loaded(["db", "status"], tmp_path, MOVIE_DB_BACKEND="external", **url)
    assert code == 0 and mods & ORM == set(), mods & ORM


def test_the_orm_seed_still_works_and_loads_the_orm(movie_db_url, tmp_path):
    code, mods, _ = loaded(["seed", "--sample", "3"], tmp_path, MOVIE_DATABASE_URL=movie_db_url)
    assert code == 0 and {"sqlalchemy", "sqlmodel"} <= mods


def _same(text: str) -> str:
    """A report's text without what differs between two runs: latencies, totals, and the
    capacity line (the other run's connection may still be closing)."""
    text = re.sub(r" +\d+\.\d ms| in \d+ ms", " N ms", text)
    return re.sub(r"(capacity +N ms ).*", r"\1…", text)


@pytest.mark.parametrize("args", [["health"], ["health", "--ready"], ["health", "--live"]])
def test_fast_path_prints_what_the_full_cli_prints(movie_db_url, tmp_path, args):
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    fast = loaded(args, tmp_path, **url)
    full = loaded(args, tmp_path, MOVIECTL_NO_FASTPATH="1", **url)
    assert "typer" not in fast[1] and "typer" in full[1]
    assert fast[0] == full[0] == 0
    assert _same(fast[2]) == _same(full[2])
    assert fast[2].splitlines()[-1].startswith("healthy in ")

    fast_doc = json.loads(loaded([*args, "--json"], tmp_path, **url)[2])
    full_doc = json.loads(loaded([*args, "--json"], tmp_path, MOVIECTL_NO_FASTPATH="1", **url)[2])
    for doc in (fast_doc, full_doc):
        doc.pop("elapsed_ms")
        for check in doc["checks"]:
            check.pop("latency_ms")
            if check["name"] == "capacity":
                check.pop("detail"), check.pop("data")
    assert fast_doc == full_doc


@pytest.mark.parametrize(
    ("env", "code"),
    [
        ({"MOVIE_DATABASE_URL": "postgresql://u:S3cret@127.0.0.1:1/db"}, 3),
        ({"MOVIE_DB_PORT": "1", "MOVIE_DB_PASSWORD": "S3cret"}, 3),
    ],
)
def test_fast_path_fails_as_the_full_cli_fails(tmp_path, env, code):
    fast = loaded(["health"], tmp_path, MOVIE_CONNECT_TIMEOUT="1", **env)
    full = loaded(["health"], tmp_path, MOVIE_CONNECT_TIMEOUT="1", MOVIECTL_NO_FASTPATH="1", **env)
    assert fast[0] == full[0] == code
    assert _same(fast[2]) == _same(full[2]) and "S3cret" not in fast[2]


def test_wrong_password_on_the_fast_path(movie_db_url, tmp_path):
    wrong = re.sub(r"://([^:]+):[^@]+@", r"://\1:nope@", movie_db_url)
    code, mods, out = loaded(["--json", "health"], tmp_path, MOVIE_DATABASE_URL=wrong)
    checks = {c["name"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 4 and "typer" not in mods
    assert checks == {
        "reachable": "pass",
        "auth": "fail",
        "query": "skip",
        "migrations": "skip",
        "capacity": "skip",
    }


@pytest.mark.parametrize(
    ("args", "form"),
    [
        (["health", "--json"], ("all", True)),
        (["--json", "health"], ("all", True)),
        (["health", "--ready", "--json"], ("ready", True)),
        (["health", "--json", "--live"], ("live", True)),
        (["health", "--live", "--ready", "--json"], None),  # the full CLI decides
        (["health", "--check", "auth", "--json"], None),
        (["health", "--json", "--json"], None),
        (["--live", "--json", "health"], None),  # a root option: the full CLI's usage error
        (["-v", "health", "--json"], None),
        (["backup", "--json"], None),
        ([], None),
    ],
)
def test_fast_forms(args, form):
    assert fast_form(args) == form


# what differs between two backups of one database: names, checksums, sizes, times
_BACKUP_VARIES = [
    (r"-\d{8}T\d{6}Z-[0-9a-f]{6}", "-NAME"),
    (r"sha256 [0-9a-f]{16}", "sha256 SHA"),
    (r"\d+(\.\d+)? (B|KiB|MiB|ms|s)\b", "N U"),
]


def _same_backup(text: str) -> str:
    for pattern, repl in _BACKUP_VARIES:
        text = re.sub(pattern, repl, text)
    return text


def test_backup_fast_path_writes_what_the_full_cli_writes(movie_db_url, tmp_path):
    """A scripted `moviectl backup` skips Typer (and Rich): the same lines, the same JSON
    document, and backups the full CLI's `backup verify` passes."""
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    fast_dir, full_dir = tmp_path / "fast", tmp_path / "full"
    fast_dir.mkdir(), full_dir.mkdir()
    fast = loaded(["backup", "-o", str(fast_dir)], tmp_path, **url)
    full = loaded(["backup", "-o", str(full_dir)], tmp_path, MOVIECTL_NO_FASTPATH="1", **url)
    assert fast[0] == full[0] == 0
    assert not fast[1] & NOT_FAST and "typer" in full[1]
    assert _same_backup(fast[2]).replace("/fast/", "/D/") == _same_backup(full[2]).replace(
        "/full/", "/D/"
    )

    fast_doc = json.loads(loaded(["--json", "backup", f"--output={fast_dir}"], tmp_path, **url)[2])
    full_doc = json.loads(
        loaded(
            ["backup", "--json", "-o", str(full_dir)], tmp_path, MOVIECTL_NO_FASTPATH="1", **url
        )[2]
    )
    for doc in (fast_doc, full_doc):
        man = doc["manifest"]
        assert man["sha256"] and man["size_bytes"] > 0
        for key in ("file", "sha256", "size_bytes", "started_at", "finished_at", "seconds"):
            man.pop(key)
        doc.pop("path"), doc.pop("manifest_path")
    assert fast_doc == full_doc
    for backup in [*fast_dir.glob("*.dump"), *full_dir.glob("*.dump")]:
        code, _, _ = loaded(["backup", "verify", str(backup)], tmp_path, **url)
        assert code == 0, backup


# A scripted backup, naming what was loaded when each child program started.
SPAWN_PROBE = """
import json, os, runpy, sys
spawns = []
def hook(event, args):
    if event == "subprocess.Popen":
        spawns.append([os.path.basename(str(args[0])), "pydantic" in sys.modules])
sys.addaudithook(hook)
sys.argv = ["moviectl", "backup", "-o", sys.argv[1]]
try:
    runpy.run_module("moviectl", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    sys.stderr.write("\\nSPAWNS " + json.dumps({"code": exc.code, "spawns": spawns}))
"""


def test_a_scripted_backup_starts_pg_dump_before_pydantic_loads(movie_db_url, tmp_path):
    """pydantic (~75 ms) loads while pg_dump runs (infra/early_settings.py)."""
    res = subprocess.run(
        [sys.executable, "-c", SPAWN_PROBE, str(tmp_path)],
        env=subprocess_env(MOVIE_DATABASE_URL=movie_db_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    doc = json.loads(res.stderr.rsplit("\nSPAWNS ", 1)[1])
    assert doc["code"] == 0, res.stderr
    pg_dump = [loaded for name, loaded in doc["spawns"] if name == "pg_dump"]  # --version too
    assert pg_dump and not any(pg_dump), doc
    assert ["pg_restore", True] in doc["spawns"], doc  # settled by the time it is read back


@pytest.mark.parametrize(
    ("env", "args", "code"),
    [
        ({"MOVIE_DB_PORT": "1", "MOVIE_DB_PASSWORD": "S3cret"}, [], 3),  # nobody listening
        ({"MOVIE_DATABASE_URL": "postgresql://u:S3cret@127.0.0.1:1/db"}, [], 3),
        ({"MOVIE_DB_PORT": "abc"}, [], 2),  # a bad setting
        ({"MOVIE_DB_PORT": "1"}, ["-o", "/nonexistent/dir"], 2),  # no such directory
        ({"MOVIE_DB_PORT": "1", "MOVIE_DB_BACKEND": "external"}, [], 3),  # its own hint
        # read by pydantic only, after the early read: still the error, as the full CLI
        # reads every setting first
        ({"MOVIE_DB_PORT": "1", "MOVIE_POOL_SIZE": "x"}, [], 2),
        ({"MOVIE_STALL_TIMEOUT": "0"}, ["-o", "/nonexistent/dir"], 2),
        ({"MOVIE_DB_PORT": "1", "MOVIE_DB_BACKEND": "Docker"}, [], 2),  # no early read
    ],
)
def test_backup_fast_path_fails_as_the_full_cli_fails(tmp_path, env, args, code):
    """The same one line, hint and exit code, through the same handler; under --json the
    same one document on stdout."""
    env = {"MOVIE_CONNECT_TIMEOUT": "1", **env}
    for argv in (["backup", *args], ["--json", "backup", *args]):
        fast = loaded_with_stderr(argv, tmp_path, **env)
        full = loaded_with_stderr(argv, tmp_path, MOVIECTL_NO_FASTPATH="1", **env)
        assert "typer" not in fast[1] and "typer" in full[1]
        assert fast[0] == full[0] == code, (fast, full)
        assert (fast[2], fast[3]) == (full[2], full[3])
        assert "S3cret" not in fast[2] + fast[3] and fast[3].startswith("error: ")
        if "--json" in argv:
            assert json.loads(fast[2])["exit_code"] == code


@pytest.mark.parametrize(
    ("args", "form"),
    [
        (["backup"], (None, False)),
        (["--json", "backup"], (None, True)),
        (["backup", "--json", "-o", "d"], ("d", True)),
        (["backup", "--output", "d"], ("d", False)),
        (["backup", "--output=d"], ("d", False)),
        (["backup", "-o", "d", "--output", "e"], None),  # twice: Typer's to parse
        (["backup", "--json", "--json"], None),
        (["backup", "-o"], None),  # Typer's usage error
        (["backup", "-o", "--json"], None),
        (["backup", "--output="], None),
        (["backup", "-od"], None),
        (["backup", "--format", "plain"], None),
        (["backup", "list"], None),
        (["backup", "--help"], None),
        (["-v", "backup"], None),
        (["--env-file", "x", "backup"], None),
        (["health"], None),
        ([], None),
    ],
)
def test_backup_forms(args, form):
    assert backup_form(args) == form


def _with_reader_gone(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """``moviectl ARGS`` writing to a pipe whose reader has already left (`… | jq`, jq
    died): (exit code, stderr)."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run(
            [sys.executable, "-m", "moviectl", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=subprocess_env(**env),
            cwd=cwd,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    return res.returncode, res.stderr


@pytest.mark.parametrize("fast", [True, False], ids=["fast path", "full CLI"])
def test_a_failure_whose_json_has_no_reader_still_says_what_failed(tmp_path, fast):
    env = {"MOVIE_DB_PORT": "1", "MOVIE_CONNECT_TIMEOUT": "1"}
    if not fast:
        env["MOVIECTL_NO_FASTPATH"] = "1"
    code, err = _with_reader_gone(["--json", "backup", "-o", str(tmp_path)], tmp_path, **env)
    assert code == 3 and "Traceback" not in err, err
    assert err.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1")


def test_health_fast_path_with_no_reader_exits_quietly(movie_db_url, tmp_path):
    code, err = _with_reader_gone(["--json", "health"], tmp_path, MOVIE_DATABASE_URL=movie_db_url)
    assert (code, err) == (141, "")
