from __future__ import annotations

import pytest

from moviectl.infra.ports import free_port
from tests.conftest import Cli


@pytest.fixture
def emb(tmp_path):
    """The CLI on an embedded server of the test's own (stopped after it)."""
    env = {
        "MOVIE_DB_BACKEND": "embedded",
        "MOVIE_DB_PORT": str(free_port()),
        "MOVIE_DATA_DIR": str(tmp_path / "data"),
        "MOVIE_DB_PASSWORD": "emb-secret",
    }
    cli = Cli(env)
    yield cli
    cli("db", "down")
