"""core/seed/copy_stream.py: the sender thread ends even when the end marker never came."""

from __future__ import annotations

import queue
import threading

from moviectl.core.seed.copy_stream import next_chunk


def test_the_sender_ends_on_an_empty_queue_once_the_producer_has_ended():
    """A signal can cut the producer's ``put(None)``: the sender must not wait for ever
    (seed hung 1 run in 5 when Ctrl-C landed there)."""
    pipe: queue.Queue[str | None] = queue.Queue()
    ending = threading.Event()
    pipe.put("chunk")
    ending.set()
    assert next_chunk(pipe, ending) == "chunk"  # what was queued is still sent
    assert next_chunk(pipe, ending) is None  # then it ends, with no marker


def test_the_sender_waits_while_the_producer_runs():
    pipe: queue.Queue[str | None] = queue.Queue()
    ending = threading.Event()
    threading.Timer(0.5, pipe.put, ("late",)).start()
    assert next_chunk(pipe, ending) == "late"
