"""Start-up: one path from argv to the core. `health --live` is answered ahead of Typer
(cli/live.py) with the same settings, report, output and failure handler, and answers
exactly as the Typer path does; commands that need no ORM never import it; no answer depends
on whether stdout is a terminal.

Structure, not timing (benchmarks/run.py has the times): each command runs in its own
interpreter against a real database and reports the top-level modules it loaded.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import subprocess_env

ORM = {"sqlalchemy", "sqlmodel", "alembic"}
# what `health --live` never loads (a container healthcheck runs it every few seconds)
NOT_LIVE = ORM | {"psycopg", "pydantic", "typer", "click", "rich"}

# Runs the real entry point (as the console script does), then names what it loaded.
PROBE = """
import json, sys
sys.argv = ["moviectl", *json.loads(sys.argv[1])]
from moviectl.cli.entry import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stdout.flush()
# top-level names, and moviectl's own modules by their full names
roots = sorted({n.split(".")[0] for n in sys.modules} | {n for n in sys.modules if n.startswith("moviectl.")})
sys.stderr.write("\\nLOADED " + json.dumps({"code": code, "modules": roots}) + "\\n")
"""


def loaded(args: list[str], cwd: Path, **env: str) -> tuple[int, set[str], str, str]:
    """(exit code, top-level modules loaded, stdout, stderr) of ``moviectl ARGS``."""
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


def test_live_loads_neither_typer_nor_the_driver(movie_db_url, tmp_path):
    code, mods, out, _ = loaded(["health", "--live"], tmp_path, MOVIE_DATABASE_URL=movie_db_url)
    assert code == 0 and mods & NOT_LIVE == set(), mods & NOT_LIVE
    assert out.splitlines()[-1].startswith("healthy in ")


def test_health_and_backup_paths_import_no_orm(movie_db_url, tmp_path):
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    for args in (["health"], ["--json", "health"], ["health", "--ready", "--json"]):
        code, mods, _, _ = loaded(args, tmp_path, **url)
        assert code == 0 and "typer" in mods and mods & ORM == set(), (args, mods & ORM)
    code, mods, _, _ = loaded(["seed", "--sample", "1500"], tmp_path, **url)  # COPY (> 1000)
    assert code == 0 and mods & ORM == set(), mods & ORM
    code, mods, out, _ = loaded(["--json", "backup", "--output", str(tmp_path)], tmp_path, **url)
    assert code == 0 and mods & ORM == set(), mods & ORM
    path = json.loads(out)["path"]
    code, mods, _, _ = loaded(["backup", "verify", path], tmp_path, **url)
    assert code == 0 and mods & ORM == set(), mods & ORM
    into = "movies_startup_" + Path(path).stem[-6:]
    try:
        code, mods, _, _ = loaded(["restore", path, "--into", into], tmp_path, **url)
        assert code == 0 and mods & ORM == set(), mods & ORM
    finally:
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            from moviectl.infra.admin import drop_database_force

            drop_database_force(c, into)
    code, mods, _, _ = loaded(["db", "status"], tmp_path, MOVIE_DB_BACKEND="external", **url)
    assert code == 0 and mods & ORM == set(), mods & ORM


def test_the_orm_seed_still_works_and_loads_the_orm(movie_db_url, tmp_path):
    code, mods, _, _ = loaded(["seed", "--sample", "3"], tmp_path, MOVIE_DATABASE_URL=movie_db_url)
    assert code == 0 and {"sqlalchemy", "sqlmodel"} <= mods


# Structure that keeps start-up cheap (issues 24, 29, 32): the CLI's floor loads neither the
# driver nor pydantic (Typer 0.29 builds every option through it); the commands that talk to
# the server load psycopg and nothing of the ORM or pydantic; --json loads no Rich.
FLOOR = ORM | {"psycopg", "pydantic", "pydantic_core", "docker", "uvicorn"}
TALKING = ORM | {"pydantic", "pydantic_core", "docker", "uvicorn"}


def _command_modules(mods: set[str]) -> set[str]:
    return {m.rsplit(".", 1)[1] for m in mods if m.startswith("moviectl.cli.commands_")}


def test_the_floor_and_the_quick_commands_load_only_what_they_use(movie_db_url, tmp_path):
    for args in (["--help"], ["--version"], ["migrate", "--help"]):
        code, mods, _, _ = loaded(args, tmp_path)
        assert code == 0 and "typer" in mods and mods & FLOOR == set(), (args, mods & FLOOR)
    # a command imports (and Typer builds) only the command the line names (issue 32)
    assert _command_modules(loaded(["--version"], tmp_path)[1]) == set()
    assert _command_modules(loaded(["migrate", "--help"], tmp_path)[1]) == {"commands_migrate"}
    url = {"MOVIE_DATABASE_URL": movie_db_url}
    for args in (["health"], ["migrate", "status"], ["inspect", "settings"], ["inspect", "locks"]):
        code, mods, _, _ = loaded(args, tmp_path, **url)
        assert code == 0 and "psycopg" in mods and "rich" in mods, (args, code)
        assert mods & TALKING == set(), (args, mods & TALKING)
        assert _command_modules(mods) == {f"commands_{args[0]}"}, (args, _command_modules(mods))
        code, mods, _, _ = loaded([*args, "--json"], tmp_path, **url)
        assert code == 0 and mods & (TALKING | {"rich"}) == set(), (args, mods & TALKING)


def _same(text: str) -> str:
    """A report's text without what differs between two runs: latencies and totals."""
    return re.sub(r" +\d+\.\d ms| in \d+ ms|\"(latency|elapsed)_ms\": [\d.]+", " N", text)


# Settings no command may accept, and the answers every command form gives.
BAD = {
    "pool size": ({"MOVIE_POOL_SIZE": "x"}, 2),
    "superscript port": ({"MOVIE_DB_PORT": "²"}, 2),
    "full-width port": ({"MOVIE_DB_PORT": "\uff15\uff14\uff13\uff12"}, 2),
    "infinite timeout": ({"MOVIE_STALL_TIMEOUT": "inf"}, 2),
    "huge number": ({"MOVIE_CONNECT_TIMEOUT": "9" * 5000}, 2),
    "NUL in the URL": ({"MOVIE_DATABASE_URL": "postgresql://u:p%00w@127.0.0.1/db"}, 2),
    "long host": ({"MOVIE_DB_HOST": "h" * 300}, 2),
    "bad sslmode": ({"MOVIE_DATABASE_URL": "postgresql://u@127.0.0.1/db?nosuch=1"}, 2),
    "nobody listening": ({"MOVIE_DB_PORT": "1", "MOVIE_DB_PASSWORD": "S3cret"}, 3),
}
FORMS = [["health", "--live"], ["health", "--ready"], ["health"], ["backup"]]


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_live_answers_as_the_typer_path_and_every_form_agrees(tmp_path, case):
    """`health --live` ahead of Typer and through it (`--env-file` sends it there) print the
    same, exit the same; every form gives one line or one JSON document and one code."""
    env, code = BAD[case]
    env = {"MOVIE_CONNECT_TIMEOUT": "1", **env}
    dotenv = tmp_path / ".env"
    dotenv.write_text("")
    for json_args in ([], ["--json"]):
        fast = loaded([*json_args, "health", "--live"], tmp_path, **env)
        full = loaded(["--env-file", str(dotenv), *json_args, "health", "--live"], tmp_path, **env)
        assert "typer" not in fast[1] and "typer" in full[1]
        assert fast[0] == full[0] == code, (fast, full)
        assert _same(fast[2]) == _same(full[2]) and fast[3] == full[3]
        for form in FORMS:
            got, _, out, err = loaded([*json_args, *form], tmp_path, **env)
            assert got == code, (form, out, err)
            assert "S3cret" not in out + err
            if json_args:
                assert json.loads(out)["exit_code"] == code
            if code == 2:
                assert err.startswith("error: ") and len(err.splitlines()) <= 2, err


def test_a_non_utf8_setting_is_one_line_everywhere(tmp_path):
    env = {**subprocess_env(), "MOVIE_DB_HOST": b"db\xff"}
    for form in FORMS:
        for args in ([*form], ["--json", *form]):
            res = subprocess.run(
                [sys.executable, "-m", "moviectl", *args],
                env=env,  # type: ignore[arg-type]
                cwd=tmp_path,
                capture_output=True,
                timeout=60,
            )
            assert res.returncode == 2, (args, res.stderr)
            assert res.stderr.startswith(b"error: bad value for MOVIE_DB_HOST"), res.stderr
            if "--json" in args:
                assert json.loads(res.stdout)["exit_code"] == 2


def test_from_a_deleted_directory_every_form_says_so(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    for form in FORMS:
        for args in (form, ["--json", *form]):
            res = subprocess.run(
                [
                    "sh",
                    "-c",
                    f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m moviectl "$@"',
                    sys.executable,
                    *args,
                ],
                env=subprocess_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert res.returncode == 2, (args, res.stderr)
            assert "Traceback" not in res.stderr
            assert res.stderr.startswith("error: the current directory no longer exists")
            if "--json" in args:
                assert json.loads(res.stdout)["exit_code"] == 2
            gone.mkdir()


def _in_a_terminal(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """``moviectl ARGS`` with stdout and stderr on a pseudo-terminal: (exit code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moviectl", *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        env=subprocess_env(NO_COLOR="1", COLUMNS="200", **env),
        cwd=cwd,
    )
    os.close(follower)
    chunks, deadline = [], time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # the terminal closed: the child is done
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif proc.poll() is not None:
                break
        text = b"".join(chunks).decode().replace("\r\n", "\n")
        return proc.wait(timeout=10), re.sub(r"\x1b\[[0-9;]*m", "", text)  # styles only
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("case", ["pool size", "nobody listening"])
def test_a_terminal_changes_no_answer(tmp_path, case):
    """The same exit code and text in a terminal as in a pipe (only colour may differ)."""
    env, code = BAD[case]
    env = {"MOVIE_CONNECT_TIMEOUT": "1", **env}
    for form in FORMS[:3]:
        got, text = _in_a_terminal(form, tmp_path, **env)
        piped, _, out, err = loaded(form, tmp_path, **env)
        assert got == piped == code, (form, text)
        assert _same(text).split() == _same(out + err).split(), form


def _with_reader_gone(args: list[str], cwd: Path, **env: str) -> tuple[int, str]:
    """``moviectl ARGS`` writing to a pipe whose reader has already left (`… | jq`, jq
    died): (exit code, stderr)."""
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


def test_a_failure_whose_json_has_no_reader_still_says_what_failed(tmp_path):
    env = {"MOVIE_DB_PORT": "1", "MOVIE_CONNECT_TIMEOUT": "1"}
    code, err = _with_reader_gone(["--json", "backup", "-o", str(tmp_path)], tmp_path, **env)
    assert code == 3 and "Traceback" not in err, err
    assert err.startswith("error: cannot reach PostgreSQL at 127.0.0.1:1")


@pytest.mark.parametrize("args", [["--json", "health"], ["--json", "health", "--live"]])
def test_health_with_no_reader_exits_quietly(movie_db_url, tmp_path, args):
    code, err = _with_reader_gone(args, tmp_path, MOVIE_DATABASE_URL=movie_db_url)
    assert (code, err) == (141, "")


@pytest.mark.parametrize(
    "args", [["--json", "backup"], ["backup"], ["--json", "health", "--live"], ["health"]]
)
def test_a_command_that_worked_with_stdout_closed_still_worked(movie_db_url, tmp_path, args):
    """`moviectl backup >&-` (cron with stdout closed): exit 0, not an internal error."""
    res = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "moviectl", *args],
        env=subprocess_env(MOVIE_DATABASE_URL=movie_db_url, MOVIE_BACKUP_DIR=str(tmp_path)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr


@pytest.mark.parametrize(
    "args", [["--json", "health", "--live"], ["--json", "-v", "health", "--live"]]
)
def test_sigterm_during_live_is_the_same_document_on_both_paths(tmp_path, args):
    """A probe killed by its orchestrator while the server hangs: exit 143 and one JSON
    document, ahead of Typer as through it."""
    import socket

    with socket.socket() as hung:  # accepts, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "moviectl", *args],
            env=subprocess_env(MOVIE_DB_PORT=str(port), MOVIE_CONNECT_TIMEOUT="30"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        hung.settimeout(60)
        try:
            conn, _ = hung.accept()  # the probe has connected, and waits for an answer
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            conn.close()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 143, err
    assert json.loads(out)["exit_code"] == 143 and "terminated" in err


@pytest.mark.parametrize("args", [["config", "show"], ["-v", "health", "--live"]])
def test_a_reader_gone_mid_rich_output_is_141_not_1(tmp_path, args):
    """Rich exits 1 on a broken pipe ("a check failed" here): moviectl says 141, as the JSON
    path and a shell do."""
    code, err = _with_reader_gone(args, tmp_path, MOVIE_DB_PORT="1", MOVIE_CONNECT_TIMEOUT="1")
    assert code == 141 and "Traceback" not in err, err
