"""Fixtures the S3 fault and upload tests share (a module that needs another scope or
configuration defines its own ``s3``, which takes precedence over this one)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.core.s3server import SeaweedS3


@pytest.fixture
def s3(tmp_path) -> Iterator[SeaweedS3]:
    """A SeaweedFS of the test's own: a test may stop, stall or fill it."""
    server = SeaweedS3(tmp_path / "seaweed")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def big_db(movie_db_url):
    """A dump of tens of MB (uncompressed): many 8 MiB parts, seconds to upload."""
    with psycopg.connect(movie_db_url, autocommit=True) as c:
        c.execute(
            "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g + 1)::text) AS t "
            "FROM generate_series(1, 1500000) g"
        )
    return movie_db_url
