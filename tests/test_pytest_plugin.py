"""The plugin as another project would use it: a pytester run in a subprocess."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_plugin_fixtures_keep_failed_and_report(pytester, moviectl_admin_target, monkeypatch):
    pytester.makepyfile(
        """
        import psycopg
        from moviectl.infra.repository import MovieRepository

        def test_engine_and_session(movie_session, movie_db_url):
            repo = MovieRepository(movie_session)
            repo.create({"title": "Heat", "year": 1995, "genre": "Crime"})
            assert repo.count() == 1

        def test_isolated(movie_db_url):
            with psycopg.connect(movie_db_url) as conn:
                assert conn.execute("select count(*) from movies").fetchone()[0] == 0

        def test_fails(movie_db_url):
            assert False, "boom"
        """
    )
    url = moviectl_admin_target.url(masked=False)
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", url)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--moviectl-keep-failed", "-n", "0"
    )
    result.assert_outcomes(passed=2, failed=1)
    assert moviectl_admin_target.password not in result.stdout.str()  # the failure report
    assert "movie_db_url = 'postgresql://postgres:***@" in result.stdout.str()
    result.stdout.re_match_lines(
        [r".*test database: movies_test_[0-9a-f]+ \(kept for inspection\).*"]
    )
    kept = next(ln for ln in result.stdout.lines if "kept for inspection" in ln)
    name = kept.split("test database: ")[1].split()[0]

    from moviectl.core import testdb
    from moviectl.infra.settings import Settings

    s = Settings(_env_file=None, database_url_test=url)
    assert name in [d.name for d in testdb.list_databases(s)]
    testdb.drop(s, [name])
