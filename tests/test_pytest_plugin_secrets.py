"""A failing assertion on the plugin's URL never shows its password (issue 26, item 9)."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_failing_assertions_never_show_the_password(pytester, moviectl_admin_target, monkeypatch):
    pytester.makepyfile(
        """
        def test_equal(movie_db_url):
            assert movie_db_url == "postgresql://x"

        def test_derived(movie_db_url):
            assert movie_db_url + "?sslmode=require" == "y"

        def test_in(movie_db_url):
            assert "nowhere" in movie_db_url

        def test_where(movie_db_url):
            def same(u):
                return u + ""
            assert same(movie_db_url).startswith("mysql")

        def test_locals(movie_db_url):
            copy = str(movie_db_url)
            assert not copy
        """
    )
    password = moviectl_admin_target.password
    assert password and len(password) >= 4
    monkeypatch.setenv("MOVIE_DATABASE_URL_TEST", moviectl_admin_target.url(masked=False))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "0", "-l", "-vv")
    result.assert_outcomes(failed=5)
    text = "\n".join(result.outlines + result.errlines)
    assert "movies_test_" in text  # the URLs are there, masked
    assert password not in text
