from __future__ import annotations

import pytest

from tests.conftest import Cli
from tests.ports import free_port


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
