"""Two `moviectl health --serve` on one port: the second fails in one line with the
port-in-use exit code (8), the first keeps serving."""

from __future__ import annotations

from tests.conftest import run_moviectl, subprocess_env
from tests.core.test_health_hostile import _serving
from tests.core.test_health_http import _get


def test_a_second_serve_on_the_same_port_fails_in_one_line_and_the_first_keeps_serving(
    movie_db_url, tmp_path
):
    with _serving(movie_db_url, tmp_path / "first.log") as port:
        env = subprocess_env(MOVIE_DATABASE_URL=movie_db_url, MOVIE_CONNECT_TIMEOUT="2")
        second = run_moviectl(env, "health", "--serve", str(port), timeout=60)
        assert second.returncode == 8, (second.stdout, second.stderr)
        assert "Traceback" not in second.stderr
        errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, second.stderr
        assert "address already in use" in " ".join(second.stderr.split())
        assert "serving" not in second.stderr, second.stderr
        for path in ("/livez", "/readyz"):
            resp, body = _get(port, path)
            assert resp.status == 200, (path, body)
