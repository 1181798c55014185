from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import psycopg
import pytest

from moviectl.core.seed import copy_stream, sample
from moviectl.core.seed import load as seed
from moviectl.infra.settings import load_settings, parse_db_url
from tests.conftest import run_at_once, subprocess_env


def _count(url: str, table: str = "movies") -> int:
    with psycopg.connect(url) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def _ledger(url: str) -> list[tuple]:
    with psycopg.connect(url) as c:
        return c.execute(
            "SELECT source, requested, rows_inserted, status, method, random_seed, sha256 "
            "FROM seed_runs ORDER BY id"
        ).fetchall()


def test_sample_is_deterministic_and_distinct():
    a = list(sample.sample_rows(2000, 7))
    assert a == list(sample.sample_rows(2000, 7))
    assert a != list(sample.sample_rows(2000, 8))
    assert len({r[0] for r in a}) == 2000
    assert all(1888 <= r[1] <= 2100 and r[2] for r in a)
    assert all(r[3] is None or 0 <= float(r[3]) <= 10 for r in a)


def test_seed_sample_is_idempotent_and_recorded(cli, movie_db_url):
    r = cli("seed", "--sample", "3", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["status"] == "done" and doc["inserted"] == 3 and doc["method"] == "orm"
    with psycopg.connect(movie_db_url) as c:
        first = c.execute("SELECT title, year, genre, rating FROM movies ORDER BY title").fetchall()
    r = cli("seed", "--sample", "3", "--json")
    assert json.loads(r.stdout)["status"] == "already seeded" and _count(movie_db_url) == 3
    r = cli("seed", "--sample", "3", "--again")
    assert r.exit_code == 0 and _count(movie_db_url) == 6
    assert [row[3] for row in _ledger(movie_db_url)] == ["done", "done"]
    # --reset then the same seed gives the same rows
    assert cli("seed", "--sample", "3", "--reset").exit_code == 5  # needs --yes here
    assert cli("seed", "--sample", "3", "--reset", "--yes").exit_code == 0
    with psycopg.connect(movie_db_url) as c:
        again = c.execute("SELECT title, year, genre, rating FROM movies ORDER BY title").fetchall()
    assert again == first


def test_large_sample_goes_through_copy(cli, movie_db_url):
    r = cli("seed", "--sample", "20000", "--random-seed", "3", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["method"] == "copy" and doc["inserted"] == 20000
    assert _count(movie_db_url) == 20000
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(DISTINCT title) FROM movies").fetchone()[0] == 20000
    assert _ledger(movie_db_url)[0][:5] == ("sample", 20000, 20000, "done", "copy")


@pytest.mark.parametrize("value", ["0", "-5", "many"])
def test_bad_sample_values(cli, value):
    r = cli("seed", "--sample", value)
    assert r.exit_code == 2
    assert "Traceback" not in r.output


def test_refuses_an_unmigrated_database(cli_empty):
    r = cli_empty("seed", "--sample", "3")
    assert r.exit_code == 6 and "moviectl migrate" in r.stderr


def test_from_csv_and_json(cli, movie_db_url, tmp_path):
    csv_file = tmp_path / "films.csv"
    csv_file.write_text(
        'title,year,genre,rating\nHeat,1995,Crime,8.3\n"Amélie, Again",2001,Romance,\n'
    )
    r = cli("seed", "--from", str(csv_file), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["inserted"] == 2 and len(doc["sha256"]) == 64
    assert (
        json.loads(cli("seed", "--from", str(csv_file), "--json").stdout)["status"]
        == "already seeded"
    )
    js = tmp_path / "films.json"
    js.write_text(json.dumps([{"title": "Alien", "year": 1979, "genre": "Horror", "rating": 8.5}]))
    assert cli("seed", "--from", str(js)).exit_code == 0
    with psycopg.connect(movie_db_url) as c:
        titles = {r[0] for r in c.execute("SELECT title FROM movies")}
    assert titles == {"Heat", "Amélie, Again", "Alien"}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"title,year,genre,rating\nGood,2000,Drama,5\nBad,3000,Drama,5\n", "line 3: year"),
        (b"title,year\nX,2000\n", "missing column(s) genre"),
        (b"", "is empty"),
        (b"title,year,genre\nCaf\xe9,2000,Drama\n", "not valid UTF-8"),
        (b"title,year,genre\n,2000,Drama\n", "line 2: title"),
    ],
)
def test_bad_files_insert_nothing(cli, movie_db_url, tmp_path, content, needle):
    f = tmp_path / "bad.csv"
    f.write_bytes(content)
    r = cli("seed", "--from", str(f))
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and "Traceback" not in r.output
    assert _count(movie_db_url) == 0


def test_missing_file(cli, tmp_path):
    r = cli("seed", "--from", str(tmp_path / "nope.csv"))
    assert r.exit_code == 2 and "file not found" in r.stderr


def _wait_until_gone(c, timeout: float = 10) -> None:
    """Wait (bounded) until the terminated COPY backend has left pg_stat_activity."""
    deadline = time.monotonic() + timeout
    while (
        time.monotonic() < deadline
        and c.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query ILIKE 'COPY movies%%' "
            "AND pid <> pg_backend_pid()"
        ).fetchone()
    ):
        time.sleep(0.02)


def test_server_dying_mid_copy_rolls_back_and_ledger_says_failed(movie_db_url, monkeypatch):
    monkeypatch.setattr(copy_stream, "CHUNK", 500)
    target = parse_db_url(movie_db_url)
    killed = threading.Event()

    def killer(done: int, total: int) -> None:
        if done >= 5000 and not killed.is_set():
            killed.set()
            with psycopg.connect(movie_db_url, autocommit=True) as c:
                c.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query ILIKE 'COPY movies%%' AND pid <> pg_backend_pid()"
                )
                _wait_until_gone(c)

    s = load_settings(use_dotenv=False)
    with pytest.raises(Exception) as err:
        seed.seed(s, sample=50_000, target=target, progress=killer)
    assert killed.is_set()
    assert "Traceback" not in str(err.value)
    assert _count(movie_db_url) == 0
    assert _ledger(movie_db_url)[0][3] == "failed"


def test_large_file_goes_through_copy_with_escaping(cli, movie_db_url, tmp_path):
    import csv

    f = tmp_path / "big.csv"
    with open(f, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["title", "year", "genre", "rating"])
        w.writerow(["Tab\there \\ back\\slash", 1999, "Drama", ""])
        for i in range(1500):
            w.writerow([f"Film {i}", 2000, "Comedy", "7.5"])
    r = cli("seed", "--from", str(f), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["method"] == "copy"
    with psycopg.connect(movie_db_url) as c:
        row = c.execute("SELECT title, rating FROM movies WHERE year = 1999").fetchone()
    assert row == ("Tab\there \\ back\\slash", None)
    assert _count(movie_db_url) == 1501


@pytest.mark.parametrize("n", [3, 5000])  # the repository path and the COPY path
def test_the_same_seed_set_run_at_once_inserts_once(cli, movie_db_url, n):
    docs = run_at_once(cli.env, "seed", "--sample", str(n), n=3)
    assert sorted(d["status"] for d in docs) == ["already seeded"] * 2 + ["done"]
    assert _count(movie_db_url) == n
    with psycopg.connect(movie_db_url) as c:
        assert c.execute("SELECT count(*) FROM seed_runs").fetchone()[0] == 1


def test_a_killed_seed_is_marked_failed_and_the_next_run_inserts_once(cli, movie_db_url):
    env = subprocess_env(**cli.env)
    cmd = [sys.executable, "-m", "moviectl", "seed", "--sample", "300000"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(movie_db_url, autocommit=True) as c:
            while time.monotonic() < deadline and proc.poll() is None:
                if c.execute("SELECT 1 FROM seed_runs WHERE status = 'running'").fetchone():
                    break
                time.sleep(0.02)
        assert proc.poll() is None, "the seed finished before it could be killed"
        proc.kill()  # kill -9: no cleanup code of moviectl's runs
    finally:
        proc.wait(timeout=30)
    r = cli("seed", "--sample", "300000", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["inserted"] == 300000
    assert _count(movie_db_url) == 300000
    with psycopg.connect(movie_db_url) as c:
        rows = c.execute("SELECT status, error FROM seed_runs ORDER BY id").fetchall()
    assert [s for s, _ in rows] == ["failed", "done"]
    assert rows[0][1].startswith("abandoned")


SEED_FILE_CASES = {
    "json array, bad item": (
        "m.json",
        '[\n  {"title": "A", "year": 2000, "genre": "Drama"},\n\n  {"title": "B", "year": 1, "genre": "Drama"}\n]',
        "line 4",
    ),
    "jsonl syntax error": (
        "m.jsonl",
        '{"title": "A", "year": 2000, "genre": "Drama"}\n\n{"title": oops}\n',
        "line 3",
    ),
    "jsonl list": ("m.jsonl", '{"title": "A", "year": 2000, "genre": "Drama"}\n[1,2]\n', "line 2"),
    "jsonl string": ("m.jsonl", '"x"\n', "line 1"),
    "jsonl null": ("m.jsonl", "null\n", "line 1"),
    "deep json": ("m.json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "huge csv field": ("m.csv", "title,year,genre\n" + "x" * 1_000_000 + ",2000,Drama\n", "line 2"),
    "blank title": ("m.csv", "title,year,genre\nOk,2000,Drama\n   ,2001,Drama\n", "line 3"),
    "NUL title": ("m.jsonl", '{"title": "a\\u0000b", "year": 2000, "genre": "Drama"}\n', "line 1"),
}


@pytest.mark.parametrize("case", list(SEED_FILE_CASES), ids=list(SEED_FILE_CASES))
def test_bad_seed_files_name_the_real_line_and_insert_nothing(cli, movie_db_url, tmp_path, case):
    name, text, needle = SEED_FILE_CASES[case]
    path = tmp_path / name
    path.write_text(text)
    r = cli("seed", "--from", str(path), "--json")
    assert r.exit_code == 2, r.output
    assert needle in json.loads(r.stdout)["message"] and "Traceback" not in r.output
    assert _count(movie_db_url) == 0


def test_a_bom_from_a_spreadsheet_is_fine(cli, movie_db_url, tmp_path):
    path = tmp_path / "movies.csv"
    path.write_bytes("\ufefftitle,year,genre\nAlien,1979,Horror\n".encode())
    r = cli("seed", "--from", str(path))
    assert r.exit_code == 0, r.output
    assert _count(movie_db_url) == 1
