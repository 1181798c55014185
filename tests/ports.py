"""Ports for the servers tests start, out of the kernel's ephemeral range (32768+).

``bind(("", 0))`` — moviectl's own ``free_port`` — draws from that range, as does every
outgoing connection. A test server given such a port could lose it to a throwaway
cluster or a client socket of another xdist worker in the seconds before it binds (CI saw
a dry run's cluster find its port taken by a SeaweedFS of another test). Here each worker
draws from its own slice of 10000-19999, so test servers meet neither each other nor the
product's picks; 20000-29999 is left for SeaweedFS's "port + 10000" admin port.
"""

from __future__ import annotations

import os
import random

from moviectl.infra.ports import port_is_free

LOW, HIGH = 10000, 20000


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (HIGH - LOW) // max(count, 1)
    start = LOW + (index % max(count, 1)) * size
    return range(start, start + size)


_ports = _slice()
_cursor = random.randrange(len(_ports))  # two suites at once start apart


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now in this worker's slice, not handed out again until the slice wraps."""
    global _cursor
    for _ in range(len(_ports)):
        port = _ports[_cursor % len(_ports)]
        _cursor += 1
        if port_is_free(host, port):
            return port
    raise RuntimeError(f"no free port in {_ports}")
