"""infra/server_facts.py against the real embedded server."""

from __future__ import annotations

import psycopg

from moviectl.infra import server_facts


def test_version_and_major_match_what_the_server_says(movie_db_url):
    with psycopg.connect(movie_db_url) as c:
        shown = c.execute("SHOW server_version").fetchone()[0]
        num = int(c.execute("SHOW server_version_num").fetchone()[0])
        assert server_facts.server_version(c) == shown
        assert server_facts.server_major(c) == num // 10000


def test_revision_and_row_counts_of_a_migrated_database(movie_db_url):
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        head = c.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        c.execute(
            "INSERT INTO movies (title, year, genre, rating) VALUES ('A', 2001, 'drama', 7.5)"
        )
        facts = server_facts.database_facts(c)
    assert facts.alembic_revision == head
    assert facts.row_counts["movies"] == 1 and facts.row_counts["alembic_version"] == 1
    version, major, rev, counts = facts  # callers unpack it as the tuple it was
    assert (rev, counts) == (head, facts.row_counts) and major >= 13 and version


def test_an_empty_database_is_at_base(empty_db_url):
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        assert server_facts.alembic_revision(c) is None
        assert server_facts.row_counts(c) == {}
        c.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        assert server_facts.alembic_revision(c) is None  # the table, but no row
        c.execute('CREATE TABLE "Odd name" (x int)')
        c.execute('INSERT INTO "Odd name" VALUES (1), (2)')
        assert server_facts.row_counts(c) == {"Odd name": 2, "alembic_version": 0}
