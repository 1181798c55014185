"""pytest-alembic's built-in tests, run for real against moviectl's migration scripts.

The four default tests, and the experimental ``downgrade_leaves_no_trace`` (it hands
env.py a connection inside its own transaction and rolls back midway: env.py must never
commit what the caller began). The fixtures are in this directory's conftest.py.
"""

from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)
from pytest_alembic.tests.experimental import test_downgrade_leaves_no_trace

__all__ = [
    "test_downgrade_leaves_no_trace",
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]
