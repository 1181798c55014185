"""moviectl reads connection strings as libpq does: held to libpq's own parser (psycopg's
``conninfo_to_dict``) on the same inputs, and never echoes a password."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from moviectl.infra.conninfo import parse_db_url
from moviectl.infra.errors import ConfigError
from moviectl.infra.libpq_syntax import parse_conninfo

SAME_AS_LIBPQ = [
    "postgresql://movie@127.0.0.1:5432/movies?password=S3cret",
    "postgresql://movie:p%40ss%2Fw@h:5/db?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem",
    "postgresql://u@%2Fvar%2Frun%2Fpostgresql:5433/db",
    "postgresql:///db?host=/var/run/postgresql",
    "postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write",
    "postgresql://[::1]:5432/db",
    "postgres://u@h/db?options=-c%20statement_timeout%3D5s&application_name=x",
    "postgresql://movie:ab#cd@host/db",  # '#' and '?' may stand in a password
    "postgresql://movie:ab?cd@host/db?sslmode=require",
    "postgresql://u@h/db?ssl=true",
    "postgresql://h:5432,h2/db",
    "postgresql://",
    "host=h port=5 user=u password='it\\'s a p w' dbname=db sslmode=require",
    "host = h  dbname = x\\ y",
    "dbname=x port=5432,5433 host=a,b connect_timeout=3 sslcert=/c sslkey=/k",
    "service=prod",
]
# both refuse (libpq's message may echo the input; moviectl's never does)
REFUSED_BY_BOTH = [
    "postgresql://h/db?foo=bar",
    "postgresql://u:p%zz@h/db",
    "host='s3cr3tval",
    "nosuchkey=1",
]
# libpq accepts these, moviectl refuses them on purpose
REFUSED_ON_PURPOSE = [
    "postgresql://u:p@h:0/db",  # port 0 would silently mean another server
    "postgresql://movie:5678/abc@host",  # an unencoded '/' in the password
    "postgresql://movie:Sup3r/S3cret@host/db",
]


@pytest.mark.parametrize("text", SAME_AS_LIBPQ)
def test_same_keywords_and_values_as_libpq(text):
    assert parse_conninfo(text) == conninfo_to_dict(text)


@pytest.mark.parametrize("text", REFUSED_BY_BOTH)
def test_refused_like_libpq_without_echoing_the_input(text):
    with pytest.raises(psycopg.ProgrammingError):
        conninfo_to_dict(text)
    with pytest.raises(ConfigError) as err:
        parse_conninfo(text, "MOVIE_DATABASE_URL")
    shown = err.value.message + (err.value.hint or "")
    assert "s3cr3tval" not in shown and "p%zz" not in shown


@pytest.mark.parametrize("text", REFUSED_ON_PURPOSE)
def test_refused_on_purpose_and_never_echoed(text):
    with pytest.raises(ConfigError) as err:
        parse_db_url(text, "MOVIE_DATABASE_URL")
    shown = err.value.message + (err.value.hint or "")
    for part in ("Sup3r", "S3cret", "5678", "abc", ":p@"):
        assert part not in shown


@pytest.mark.parametrize("text", SAME_AS_LIBPQ[:11])
def test_the_displayed_url_round_trips_and_never_holds_the_password(text):
    target = parse_db_url(text)
    assert parse_db_url(target.url(masked=False)) == target
    shown = target.url(masked=True)
    if target.password:
        assert target.password not in shown and ":***@" in shown
    assert "password" not in shown


def test_pg_variables_fill_what_the_string_leaves_out(monkeypatch):
    monkeypatch.setenv("PGHOST", "db.example")
    monkeypatch.setenv("PGPORT", "6543")
    monkeypatch.setenv("PGUSER", "ops")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    t = parse_db_url("dbname=films")
    assert (t.host, t.port, t.user, t.database) == ("db.example", 6543, "ops", "films")
    assert t.wants_tls
