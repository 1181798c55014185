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
    from moviectl.infra.settings import load_settings

    s = load_settings(use_dotenv=False, database_url_test=url)
    assert name in [d.name for d in testdb.list_databases(s)]
    testdb.drop(s, [name])


def test_tier1_a_test_that_commits_the_outer_transaction_fails_and_the_next_gets_a_clean_database(
    pytester, moviectl_admin_target, monkeypatch
):
    pytester.makepyfile(
        """
        from sqlalchemy import text

        def test_a_commits(movie_connection):
            movie_connection.execute(
                text("INSERT INTO movies (title, year, genre) VALUES ('leak', 2000, 'Drama')")
            )
            movie_connection.commit()

        def test_b_sees_nothing(movie_connection):
            assert movie_connection.execute(text("SELECT count(*) FROM movies")).scalar() == 0

        def test_c_may_roll_back_and_go_on(movie_connection):
            movie_connection.rollback()
            movie_connection.execute(text("SELECT 1"))  # autobegins; rolled back at teardown
        """
    )
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0")
    result.assert_outcomes(passed=3, errors=1)  # test_a's teardown
    result.stdout.fnmatch_lines(["*committed tier 1's outer transaction*"])


def test_the_pool_makes_as_many_clones_ahead_as_the_tests_will_take(
    pytester, moviectl_admin_target, monkeypatch
):
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session", autouse=True)
        def report(moviectl_clone_pool):
            yield
            print(f"\\nPOOL made={moviectl_clone_pool.made} expected={moviectl_clone_pool.expected}")
        """
    )
    pytester.makepyfile(
        """
        import pytest

        def test_no_database():
            pass

        @pytest.mark.parametrize("n", range(5))
        def test_own_database(movie_db_url, n):
            pass

        def test_tier1(movie_session):
            pass

        def test_deselected(movie_db_url):
            pass
        """
    )
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-p", "no:randomly", "-n", "0", "-s", "-k", "not deselected"
    )
    result.assert_outcomes(passed=7, deselected=1)
    result.stdout.fnmatch_lines(["*POOL made=6 expected=6*"])  # 5 of tier 2, 1 for tier 1
