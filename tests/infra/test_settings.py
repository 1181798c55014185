from __future__ import annotations

import json
import os

import pytest

from moviectl.infra.errors import ConfigError
from moviectl.infra.settings import SETTING_FIELDS, load_settings, mask_url, parse_db_url
from tests.conftest import Cli


def test_parts_compose_the_url_and_the_password_is_masked():
    s = load_settings(use_dotenv=False, db_host="db.internal", db_port=6543, db_password="hunter2")
    assert s.masked_url == "postgresql://movie:***@db.internal:6543/movies"
    assert "hunter2" not in repr(s) and "hunter2" not in str(s.target())
    assert s.target().url(masked=False) == "postgresql://movie:hunter2@db.internal:6543/movies"


def test_database_url_wins_over_parts_and_keeps_special_characters():
    s = load_settings(
        use_dotenv=False, database_url="postgresql://app:p%40ss%3Aw@h:5433/films?sslmode=disable"
    )
    t = s.target()
    assert (t.user, t.password, t.host, t.port, t.database) == ("app", "p@ss:w", "h", 5433, "films")
    assert dict(t.params) == {"sslmode": "disable"}
    assert parse_db_url(t.url(masked=False)) == t
    assert s.masked_url == "postgresql://app:***@h:5433/films?sslmode=disable"


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "http://x:y@h/db",
        "postgresql://u:p@h:99999/db",
        "postgresql://u:p@h:0/db",
        "postgresql://movie:Sup3r/S3cret@host/db",  # an unencoded '/' in the password
        "postgresql://movie:5678/abc@host",
        "postgresql://u:p%zz@h/db",
        "postgresql://u:p@h/db?foo=bar",
        "host=h password='s3cr3tval",
    ],
)
def test_malformed_urls_are_config_errors_without_the_password(url):
    with pytest.raises(ConfigError) as err:
        parse_db_url(url, "MOVIE_DATABASE_URL")
    assert "MOVIE_DATABASE_URL" in err.value.message
    for secret in (":p@", ":y@", "Sup3r", "S3cret", "5678", "abc", "p%zz", "s3cr3tval"):
        assert secret not in err.value.message + (err.value.hint or "")


def test_mask_url():
    assert mask_url("postgresql://u:secret@h/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db?password=secret") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u:Sup3r/S3cret@h/db").startswith("(unparseable")


def test_env_beats_dotenv_beats_default(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "MOVIE_DB_NAME=from_dotenv\nMOVIE_DB_PORT=6000\nMOVIE_DB_PASSWORD=dotenv-secret\n"
    )
    monkeypatch.setenv("MOVIE_DB_PORT", "7000")
    r = Cli()("config", "show", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    rows = {row["key"]: row for row in doc["settings"]}
    assert (
        rows["MOVIE_DB_PORT"]["value"] == 7000 and rows["MOVIE_DB_PORT"]["source"] == "environment"
    )
    assert (
        rows["MOVIE_DB_NAME"]["value"] == "from_dotenv"
        and rows["MOVIE_DB_NAME"]["source"] == ".env"
    )
    assert rows["MOVIE_DB_HOST"]["source"] == "default"
    assert rows["MOVIE_DB_PASSWORD"]["value"] == "***"
    assert "dotenv-secret" not in r.output
    assert doc["database_url"] == "postgresql://movie:***@127.0.0.1:7000/from_dotenv"


def test_config_show_table_and_env_file_flag(tmp_path):
    other = tmp_path / "staging.env"
    other.write_text("MOVIE_DATABASE_URL=postgresql://u:topsecret@staging:5432/movies\n")
    r = Cli()("--env-file", str(other), "config", "show")
    assert r.exit_code == 0, r.output
    assert "postgresql://u:***@staging:5432/movies" in r.stdout
    assert "topsecret" not in r.output
    assert "MOVIE_POOL_SIZE" in r.stdout


def test_missing_env_file_and_bad_values_are_usage_errors(tmp_path):
    r = Cli()("--env-file", str(tmp_path / "nope.env"), "config", "show")
    assert r.exit_code == 2 and "env file not found" in r.stderr
    r = Cli({"MOVIE_DB_BACKEND": "kubernetes"})("config", "show")
    assert r.exit_code == 2 and "MOVIE_DB_BACKEND" in r.stderr and "Traceback" not in r.output
    r = Cli({"MOVIE_POOL_SIZE": "0"})("config", "show")
    assert r.exit_code == 2 and "MOVIE_POOL_SIZE" in r.stderr


def test_env_example_lists_every_setting():
    from tests.conftest import ROOT

    text = (ROOT / ".env.example").read_text()
    for name in SETTING_FIELDS:
        assert f"MOVIE_{name.upper()}" in text, name


def test_load_settings_reads_a_given_file(tmp_path):
    f = tmp_path / "x.env"
    f.write_text("MOVIE_CONNECT_TIMEOUT=9\n")
    assert load_settings(f).connect_timeout == 9


@pytest.mark.parametrize("port", ["0", "65536", "99999"])
def test_port_zero_or_out_of_range_is_a_usage_error(port):
    url = f"postgresql://movie:S3cretPw@127.0.0.1:{port}/movies"
    for args in (["health"], ["health", "--live"], ["config", "show"]):
        r = Cli({"MOVIE_DATABASE_URL": url})(*args)
        assert r.exit_code == 2, (args, r.output)
        assert "port" in r.stderr.lower() and "S3cretPw" not in r.output


def test_dotenv_single_quotes_are_literal_as_in_the_shell(tmp_path, monkeypatch):
    """A password with `${` can live in .env; double quotes and bare values expand."""
    monkeypatch.setenv("HOME", "/home/op")
    (tmp_path / ".env").write_text(
        "MOVIE_DB_PASSWORD='ab${HOME}cd'\nMOVIE_DB_NAME=\"db_${HOME}\"\nMOVIE_DB_USER=u_${HOME}\n"
    )
    s = load_settings()
    assert s.db_password.get_secret_value() == "ab${HOME}cd"
    assert s.db_name == "db_/home/op" and s.db_user == "u_/home/op"
    r = Cli()("config", "show", "--json")
    rows = {row["key"]: row for row in json.loads(r.stdout)["settings"]}
    assert rows["MOVIE_DB_PASSWORD"]["source"] == ".env" and "ab$" not in r.stdout


def test_a_bad_setting_names_where_it_came_from(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("# db\nMOVIE_DB_HOST=h\n\nMOVIE_DB_PORT=abc\n")
    r = Cli()("config", "show")
    assert r.exit_code == 2 and "MOVIE_DB_PORT (.env line 4)" in r.stderr, r.output
    assert "config show` to see" not in r.stderr
    r = Cli({"MOVIE_DB_PORT": "xyz"})("health")
    assert r.exit_code == 2 and "MOVIE_DB_PORT (in the environment)" in r.stderr, r.output


def test_unreachable_hints_fit_the_backend():
    r = Cli({"MOVIE_DB_BACKEND": "external", "MOVIE_DB_PORT": "1"})("migrate", "status")
    assert r.exit_code == 3 and "does not manage this server" in r.stderr, r.output
    r = Cli({"MOVIE_DB_BACKEND": "embedded", "MOVIE_DB_PORT": "1"})("migrate", "status")
    assert r.exit_code == 3 and "moviectl db up" in r.stderr, r.output


def test_one_reader_for_values_and_their_sources(tmp_path, monkeypatch):
    """`config show` names as the source only what load_settings took: a name with a long s
    (U+017F) in it sets nothing anywhere, `movie_db_name` sets MOVIE_DB_NAME, the exact
    upper-case spelling wins over another."""
    from moviectl.infra.settings_report import describe_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MOVIE_DB_USER=fromfile\nMOVIE_POOL_SIZE\n")
    monkeypatch.setenv("MOVIE_DATABA\u017fE_URL", "postgresql://x@elsewhere/db")
    monkeypatch.setenv("movie_db_name", "lower")
    monkeypatch.setenv("movie_db_host", "lower.example")
    monkeypatch.setenv("MOVIE_DB_HOST", "upper.example")
    s = load_settings()
    assert (s.database_url, s.db_name, s.db_host, s.db_user) == (
        None,
        "lower",
        "upper.example",
        "fromfile",
    )
    sources = {r.key: r.source for r in describe_settings(s)}
    assert sources["MOVIE_DATABASE_URL"] == "default"
    assert sources["MOVIE_DB_NAME"] == "environment"
    assert sources["MOVIE_DB_USER"] == ".env"
    assert sources["MOVIE_POOL_SIZE"] == "default"  # a key without a value sets nothing


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"MOVIE_DB_PORT": "\u00b2"}, "whole number"),
        ({"MOVIE_DB_PORT": "\uff15\uff14\uff13\uff12"}, "whole number"),
        ({"MOVIE_CONNECT_TIMEOUT": "9" * 5000}, "whole number"),
        ({"MOVIE_STALL_TIMEOUT": "inf"}, "a number"),
        ({"MOVIE_STALL_TIMEOUT": "nan"}, "a number"),
        ({"MOVIE_POOL_TIMEOUT": "1e308"}, "a number"),
        ({"MOVIE_STALL_TIMEOUT": "0"}, "above 0"),
        ({"MOVIE_DATABASE_ECHO": "maybe"}, "true or false"),
        ({"MOVIE_DB_BACKEND": "Docker"}, "one of"),
        ({"MOVIE_DB_HOST": "h" * 300}, "too long"),
        ({"MOVIE_DB_NAME": "a\tb"}, "control character"),
        ({"MOVIE_DATABASE_URL": "postgresql://u:p%00@h/d"}, "%00"),
        ({"MOVIE_DATABASE_URL": "postgresql://u@" + "h" * 300 + "/d"}, "longer than 255"),
        ({"MOVIE_DATABASE_URL": "postgresql://u@h/d?sslmode=verify"}, "sslmode must be"),
        ({"MOVIE_DATABASE_URL": "host=h target_session_attrs=rw"}, "target_session_attrs must"),
    ],
)
def test_values_no_command_may_take_are_one_config_error(monkeypatch, env, problem):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(use_dotenv=False)
    assert problem in caught.value.message and caught.value.exit_code == 2


def test_dotenv_syntax(tmp_path, monkeypatch):
    from moviectl.infra.envfile import read_dotenv

    monkeypatch.setenv("OUTER", "out")
    f = tmp_path / ".env"
    f.write_text(
        "# comment\n"
        "export A=1 # inline\n"
        "B='lit ${OUTER} \\' x'\n"
        'C="dq ${OUTER} ${A} ${NOPE:-dflt}\\n"\n'
        "D\n"
        "E=\n"
        "F= # only a comment\n"
        "G=#kept\n"
        "H='two\nlines'\n"
        "I='bad' junk\n"
        "J=last\n"
    )
    values = {k: v for k, (v, _) in read_dotenv(f).items()}
    assert values == {
        "A": "1",
        "B": "lit ${OUTER} ' x",
        "C": "dq out 1 dflt\n",
        "D": None,
        "E": "",
        "F": "",
        "G": "#kept",
        "H": "two\nlines",
        "J": "last",
    }
    assert read_dotenv(f)["J"][1] == 12  # the line it was set on


def test_a_key_value_string_may_hold_a_scheme_like_value(monkeypatch):
    """libpq reads `host=h password='x://pw'` as key=value: so does moviectl."""
    monkeypatch.setenv("MOVIE_DATABASE_URL", "host=127.0.0.1 port=1 password='x://pw'")
    t = load_settings(use_dotenv=False).target()
    assert (t.host, t.port, t.password) == ("127.0.0.1", 1, "x://pw")


def test_a_dotenv_larger_than_a_settings_file_is_refused(tmp_path):
    f = tmp_path / "big.env"
    f.write_text("A=1\n" * 100_000)
    with pytest.raises(ConfigError, match="larger than"):
        load_settings(f)


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_dotenv_that_is_not_a_file_is_one_line_not_silence(tmp_path, kind):
    """A folder named .env was silently ignored, and `--env-file` on it said "not found";
    a FIFO would block the read."""
    f = tmp_path / "odd.env"
    if kind == "folder":
        f.mkdir()
    else:
        os.mkfifo(f)
    r = Cli()("--env-file", str(f), "config", "show")
    assert r.exit_code == 2 and "is not a regular file" in r.stderr, r.output
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_settings(f)
