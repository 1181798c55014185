"""moviectl as users get it: a wheel installed in a fresh virtualenv, run from elsewhere."""

from __future__ import annotations

import json
import subprocess
import zipfile

import pytest

from tests.conftest import install_wheel, subprocess_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    return install_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_ships_migrations_compose_file_and_types(installed):
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "moviectl/_alembic/env.py" in names
    assert any(n.startswith("moviectl/_alembic/versions/0001") for n in names)
    assert "moviectl/_compose/docker-compose.yml" in names
    assert "moviectl/py.typed" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "moviectl = moviectl.cli.entry:main" in text and "pytest11" in text


def test_installed_moviectl_migrates_from_any_directory(installed, empty_db_url, tmp_path):
    _, venv = installed
    env = subprocess_env(MOVIE_DATABASE_URL=empty_db_url)
    exe = str(venv / "bin" / "moviectl")
    res = subprocess.run(
        [exe, "--json", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["to_revision"] == "0002"
    res = subprocess.run(
        [exe, "migrate", "status"], cwd="/", env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
