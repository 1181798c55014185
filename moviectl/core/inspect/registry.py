"""The inspect subcommands by name, in the order ``--help`` lists them, and the one entry
point the CLI calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from moviectl.core.inspect import activity, sizes, statements, usage
from moviectl.core.inspect.model import InspectResult, Options

if TYPE_CHECKING:
    from moviectl.core.inspect.session import Inspector
    from moviectl.infra.settings import Settings

Query = Callable[["Inspector", Options], InspectResult]

QUERIES: dict[str, Query] = {
    "cache-hit": usage.cache_hit,
    "index-usage": usage.index_usage,
    "unused-indexes": usage.unused_indexes,
    "duplicate-indexes": usage.duplicate_indexes,
    "seq-scans": usage.seq_scans,
    "table-sizes": sizes.table_sizes,
    "index-sizes": sizes.index_sizes,
    "total-sizes": sizes.total_sizes,
    "bloat": sizes.bloat,
    "vacuum-stats": sizes.vacuum_stats,
    "locks": activity.locks,
    "blocking": activity.blocking,
    "long-running": activity.long_running,
    "outliers": statements.outliers,
    "calls": statements.calls,
    "connections": activity.connections,
    "replication": activity.replication,
    "settings": statements.settings,
}


def run(settings: Settings, name: str, options: Options | None = None) -> InspectResult:
    """Answer subcommand ``name`` on the app database."""
    from moviectl.core.inspect.session import inspecting

    with inspecting(settings) as i:
        return QUERIES[name](i, options or Options())
