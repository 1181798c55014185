from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import typer

from moviectl.cli.app import app
from tests.conftest import Cli, subprocess_env


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*prefix, name), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))


ALL = list(_commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_has_help_with_an_example(path):
    cmd = dict(ALL)[path]
    r = Cli()(*path, "--help")
    assert r.exit_code == 0, r.output
    assert (cmd.help or "").strip(), f"{' '.join(path)} has no help"
    runs_itself = not hasattr(cmd, "commands") or not cmd.no_args_is_help
    if runs_itself:  # what --help prints has a summary and an example
        assert "Example" in r.stdout, f"{' '.join(path)}: --help shows no Example"


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[" ".join(p) for p, _ in ALL])
def test_every_command_takes_json_after_its_name(path):
    """One `--json` option, added to every command and group callback by one mechanism."""
    cmd = dict(ALL)[path]
    if hasattr(cmd, "commands") and cmd.no_args_is_help:
        return  # a group that only lists its commands (`db`, `testdb`, `config`)
    assert [p.name for p in cmd.params if "--json" in p.opts] == ["json"], path


@pytest.mark.parametrize(
    "args",
    [
        ["--json", "seed", "--bogus"],  # the global option
        ["seed", "--json", "--bogus"],  # the command's, before what click rejects unread
        ["seed", "--bogus", "--json"],  # ... and after it
        ["seed", "--sample", "x", "--json"],  # a bad value: --json is read first (eager)
        ["--bogus", "--json"],  # a bad root option
        ["--json", "no-such-command"],
        ["db", "--json"],  # db takes no --json of its own: a usage error, as JSON
    ],
)
def test_a_usage_error_under_json_is_one_document(args):
    r = Cli()(*args)
    assert r.exit_code == 2, r.output
    doc = json.loads(r.stdout)
    assert doc["error"] == "UsageError" and doc["exit_code"] == 2
    assert r.stderr.startswith("error: ")


def test_a_usage_error_without_json_is_typers():
    r = Cli()("seed", "--bogus")
    assert r.exit_code == 2 and r.stdout == ""
    assert "No such option: --bogus" in r.stderr


@pytest.mark.parametrize("args", [["--json", "--version"], ["--version", "--json"]])
def test_version_under_json_is_one_document(args):
    r = Cli()(*args)
    assert r.exit_code == 0 and json.loads(r.stdout)["name"] == "moviectl"


def test_a_group_alone_prints_its_help_once():
    r = Cli()("db")
    assert r.exit_code == 0 and r.stdout.count(" db [OPTIONS] COMMAND") == 1, r.output


def test_the_root_help_shows_json_and_an_example():
    r = Cli()("--help")
    assert r.exit_code == 0 and "--json" in r.stdout and "Example" in r.stdout


def test_help_imports_no_heavy_module():
    code = (
        "import sys; sys.argv=['moviectl','--help']\n"
        "from moviectl.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('sqlalchemy','alembic','psycopg','docker','sqlmodel') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env()
    )
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr


def test_version_and_python_dash_m():
    res = subprocess.run(
        [sys.executable, "-m", "moviectl", "--version"], capture_output=True, text=True
    )
    assert res.returncode == 0 and res.stdout.startswith("moviectl ")


def test_bad_flag_is_a_usage_error():
    r = Cli()("migrate", "--to")
    assert r.exit_code == 2
    r = Cli()("no-such-command")
    assert r.exit_code == 2


def test_json_errors_are_one_document():
    r = Cli({"MOVIE_DB_PORT": "1"})("--json", "migrate", "status")
    assert r.exit_code == 3
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 3 and "127.0.0.1:1" in doc["message"]


def test_verbose_shows_the_traceback():
    r = Cli({"MOVIE_DB_PORT": "1"})("-v", "migrate", "status")
    assert r.exit_code == 3
    assert "Traceback" in r.stderr


def test_only_the_engine_module_calls_create_engine():
    from tests.conftest import ROOT

    offenders = [
        str(p.relative_to(ROOT))
        for p in [*(ROOT / "moviectl").rglob("*.py"), *(ROOT / "alembic").rglob("*.py")]
        if ("create_engine(" in p.read_text() or "psycopg.connect(" in p.read_text())
        and p.relative_to(ROOT).as_posix() != "moviectl/infra/engine.py"
    ]
    assert offenders == []


@pytest.mark.parametrize("args", [["migrate", "new", "--help"], ["--help"], ["config", "show"]])
def test_a_reader_that_leaves_early_gets_silence_not_an_error(args):
    """`moviectl … | head`: the pipe's reader is gone before moviectl writes; no error line."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )
    proc.stdout.close()  # the reader leaves before the child has started up
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 141), err
    assert err == b"", err


@pytest.mark.parametrize("group", ["config", "db", "testdb"])
def test_a_group_alone_under_json_is_one_document_and_exit_2(group):
    r = Cli()("--json", group)
    assert r.exit_code == 2, r.output
    assert json.loads(r.stdout)["message"] == "Missing command."
