"""`db top`: one snapshot of the sessions, their waits and who blocks them, taken on a
connection the live view keeps open between refreshes (``inspecting``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moviectl.core.inspect.activity import CLIENT
from moviectl.core.inspect.session import Inspector, hidden_note

# active and idle-in-transaction sessions first, then the longest running
TOP = f"""
SELECT pid, usename AS user, application_name AS application,
       coalesce(state, '(hidden)') AS state,
       wait_event_type || ':' || wait_event AS wait,
       extract(epoch FROM now() - CASE WHEN state = 'active' THEN query_start
                                       ELSE coalesce(xact_start, state_change) END)::float8
         AS duration,
       CASE WHEN wait_event_type = 'Lock' THEN pg_blocking_pids(pid)
            ELSE '{{}}'::int[] END AS blocked_by,
       query
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid() AND {CLIENT} AND (%(all)s OR state IS DISTINCT FROM 'idle')
 ORDER BY state = 'idle', duration DESC NULLS LAST, pid LIMIT %(limit)s
"""
COUNTS = f"""
SELECT count(*) AS sessions,
       count(*) FILTER (WHERE state = 'active') AS active,
       count(*) FILTER (WHERE state LIKE 'idle in transaction%%') AS idle_in_transaction,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting
  FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND {CLIENT}
"""


@dataclass
class TopSnapshot:
    server_major: int
    counts: dict[str, int]
    sessions: list[dict[str, Any]]
    notes: list[str]


def snapshot(i: Inspector, *, limit: int = 50, show_idle: bool = False) -> TopSnapshot:
    sessions = i.rows(TOP, {"limit": limit, "all": show_idle})
    counts = i.rows(COUNTS)[0]
    return TopSnapshot(i.major, dict(counts), sessions, hidden_note(i, sessions))
