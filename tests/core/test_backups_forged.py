"""Plain backups moviectl did not make: psql must never run a meta-command pg_dump does not
write (``\\!`` is a shell), wherever it hides (issue 26, item 1)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import psycopg
import pytest

from moviectl.core.backups.sqlguard import SqlGuard
from moviectl.infra.errors import InputFileError
from tests.conftest import backup_json


@pytest.fixture
def seeded(cli):
    r = cli("seed", "--sample", "200")
    assert r.exit_code == 0, r.output
    return cli


def _forge(doc: dict, text: str, *, append: bool = False) -> Path:
    """Replace (or extend) a plain backup's SQL and fix its manifest's checksum."""
    path, mpath = Path(doc["path"]), Path(doc["manifest_path"])
    if append:
        with open(path, "a") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    man = json.loads(mpath.read_text())
    man["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    man["size_bytes"] = path.stat().st_size  # a forger fixes the size as well
    mpath.write_text(json.dumps(man))
    return path


def _databases(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


@pytest.mark.parametrize(
    "payload",
    [
        "\\! id > {pwned}\n",  # the reproducer of the issue
        "SELECT 1; \\! id > {pwned}\n",  # after a statement on the same line
        "COPY t FROM stdin;\n\\.\n\\! id > {pwned}\n",  # after a COPY block
        "SELECT $$ x $$ \\! id > {pwned}\n",  # after a closed dollar quote
        "\\o |id > {pwned}\nSELECT 1;\n",  # another way to a shell
    ],
)
@pytest.mark.parametrize("command", ["verify", "restore"])
def test_a_forged_plain_backup_runs_no_meta_command(
    seeded, tmp_path, movie_db_url, payload, command
):
    pwned = tmp_path / "PWNED"
    doc = backup_json(seeded, tmp_path, "--format", "plain")
    path = _forge(doc, payload.format(pwned=pwned), append=payload.startswith("SELECT 1;"))
    before = _databases(movie_db_url)
    args = ["backup", "verify", str(path)] if command == "verify" else ["restore", str(path)]
    r = seeded(*args)
    assert r.exit_code == 2, r.output
    assert "meta-command" in r.stderr and "line " in r.stderr
    assert not pwned.exists()
    assert _databases(movie_db_url) == before  # nothing created, nothing left


def test_forced_restore_of_a_forged_file_touches_nothing(seeded, tmp_path, movie_db_url):
    """Refused before the safety backup and the drop: the database is as it was."""
    pwned = tmp_path / "PWNED"
    doc = backup_json(seeded, tmp_path, "--format", "plain")
    path = _forge(doc, f"\\! id > {pwned}\n", append=True)
    db = movie_db_url.rsplit("/", 1)[1].split("?")[0]
    r = seeded("restore", str(path), "--into", db, "--force", "--yes")
    assert r.exit_code == 2, r.output
    assert not pwned.exists()
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM movies").fetchone()[0] == 200
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [path.name, Path(doc["manifest_path"]).name]
    )  # no safety backup was needed: nothing was touched


def test_backslashes_in_data_and_strings_restore_as_data(seeded, tmp_path, movie_db_url):
    """A genuine plain backup whose data holds what looks like meta-commands restores and
    verifies: COPY data, quoted strings and comments are not commands."""
    pwned = tmp_path / "PWNED"
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute(
            "UPDATE movies SET title = %s WHERE id = (SELECT id FROM movies LIMIT 1)",
            (f"\\! id > {pwned}\n\\.\n\\! id > {pwned}",),
        )
        c.execute(f"COMMENT ON TABLE movies IS $c$line\n\\! id > {pwned}\n$c$")
    doc = backup_json(seeded, tmp_path, "--format", "plain")
    r = seeded("backup", "verify", doc["path"])
    assert r.exit_code == 0, r.output
    r = seeded("restore", doc["path"], "--into", "plain_copy", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["matches_manifest"]
    assert not pwned.exists()
    base = movie_db_url.rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/plain_copy") as c:
        titles = [r[0] for r in c.execute("SELECT title FROM movies WHERE title LIKE '%PWNED%'")]
        assert titles == [f"\\! id > {pwned}\n\\.\n\\! id > {pwned}"]
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute("DROP DATABASE plain_copy WITH (FORCE)")


def _guard(sql: str) -> str | None:
    g = SqlGuard("f.sql")
    try:
        for line in sql.encode().splitlines(keepends=True):
            g.feed(line)
    except InputFileError as exc:
        return exc.message
    return None


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 \\! id\n",
        "COPY t FROM stdin; \\! id\n",  # psql reads the rest of the line after the data
        "COPY (SELECT 1 FROM stdin) TO stdout;\n\\! id\n",  # not a COPY FROM stdin
        # a ; inside BEGIN ATOMIC does not end the statement for psql: no COPY starts
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; COPY t FROM stdin;"
        " END;\n\\! id\n",
        "SELECT ( ; COPY t FROM stdin;\n\\! id\n",  # nor inside parentheses
        "SELECT 'a\\' \\! id';\n",  # one string or two: standard_conforming_strings decides
        "SELECT 1$a$ ' $a$ \\! id --';\n",  # lexed differently by psql versions
        "SELECT /* /* */ */ \\! id\n",  # comments nest
        "\\connect movies host=evil\n",
        "\\restrict k \\! id\n",
        "SELECT :VERSION;\n",
    ],
)
def test_the_guard_refuses_what_psql_would_run(sql):
    assert _guard(sql) is not None


@pytest.mark.parametrize(
    "sql",
    [
        "COPY public.t (a, b) FROM stdin;\n\\! data\n\\N\t1\n\\.\nSELECT 1;\n",
        "SELECT $$ \n\\! id\n$$;\nSELECT 'a\n\\! id\n';\n",
        "SELECT $f$ $$ \\! $f$;\n/* \\! /* nested */ \\! */ SELECT 1; -- \\! x\n",
        "SELECT E'\\' \\! id';\n",  # one E'' string
        "\\restrict abcDEF123\nSELECT 1;\n\\unrestrict abcDEF123\n\\connect movies\n",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;\n"
        "COPY t FROM stdin;\n\\! data\n\\.\n",
        "SELECT a$b$, ' $b$ x', 'x'::text, a[1:2];\n",
    ],
)
def test_the_guard_lets_pg_dumps_sql_through(sql):
    assert _guard(sql) is None
