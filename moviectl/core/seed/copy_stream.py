"""COPY for large seed loads: text lines streamed in chunks by two threads.

One thread generates chunks, a second sends them (psycopg releases the GIL while it
writes); the queue between them holds a few chunks, so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from moviectl.core.seed.ledger import FINISH_RUN
from moviectl.infra.conninfo import DbTarget
from moviectl.infra.engine import connect
from moviectl.infra.settings import Settings
from moviectl.infra.watchdog import StallWatch

if TYPE_CHECKING:
    import queue
    import threading

CHUNK = 20000
QUEUE_CHUNKS = 4  # chunks in flight between generating and sending
Progress = Callable[[int, int], None]  # (done, total)


def copy_line(row: tuple[str, int, str, str | None]) -> str:
    title, year, genre, rating = row
    shown = "\\N" if rating is None else rating
    return f"{escape(title)}\t{year}\t{escape(genre)}\t{shown}\n"


def copy_rows(
    settings: Settings,
    t: DbTarget,
    rows: Iterator[str],
    total: int,
    run_id: int,
    progress: Progress | None,
    watch: StallWatch | None = None,
) -> int:
    """Stream COPY text lines in one transaction (with the ledger update).

    ``watch``: its stall cuts the COPY connection, so a paused server ends the load.
    """
    import queue
    import threading

    done = 0
    pipe: queue.Queue[str | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
    failures: list[BaseException] = []
    ending = threading.Event()

    def put(item: str | None) -> None:
        # the sender drains after a failure, so the queue never fills: check before each put,
        # or a cut connection would only be noticed once every row had been generated
        if failures and item is not None:
            raise failures[0] from None
        while True:
            try:
                pipe.put(item, timeout=0.2)
                return
            except queue.Full:
                if failures:
                    raise failures[0] from None

    from moviectl.core.migrations.timeouts import to_ms

    with connect(t, connect_timeout=settings.connect_timeout, autocommit=False) as c:
        c.execute(f"SET lock_timeout = {to_ms(settings.stall_timeout)}")  # COPY's table lock
        if watch is not None:
            watch.watch_connection(c)
        with c.cursor() as cur:
            with cur.copy("COPY movies (title, year, genre, rating) FROM STDIN") as copy:

                def send() -> None:
                    while (item := next_chunk(pipe, ending)) is not None:
                        if failures:
                            continue  # drain, so the producer never blocks
                        try:
                            copy.write(item)
                        except BaseException as exc:
                            failures.append(exc)

                sender = threading.Thread(target=send, name="moviectl-copy", daemon=True)
                sender.start()
                try:
                    chunk: list[str] = []
                    for line in rows:
                        chunk.append(line)
                        if len(chunk) == CHUNK:
                            put("".join(chunk))
                            done += CHUNK
                            chunk = []
                            if progress:
                                progress(done, total)
                    put("".join(chunk))
                    done += len(chunk)
                finally:
                    ending.set()  # the sender ends once the queue is empty, marker or not
                    stopped: BaseException | None = None
                    try:
                        put(None)
                    except (KeyboardInterrupt, SystemExit) as exc:  # Ctrl-C, SIGTERM here
                        stopped = exc
                    except BaseException:
                        pass
                    sender.join()
                    if stopped is not None:
                        raise stopped
                if failures:
                    raise failures[0]
            cur.execute(FINISH_RUN, {"n": done, "id": run_id})
        c.commit()
    if progress:
        progress(done, total)
    return done


def escape(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return (
            text.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return text


def next_chunk(pipe: queue.Queue[str | None], ending: threading.Event) -> str | None:
    """The next chunk, or None at the end: the marker, or an empty queue once the producer
    has ended (a signal may have cut its ``put(None)``: the sender must not wait for ever)."""
    import queue as queues

    while True:
        try:
            return pipe.get(timeout=0.2)
        except queues.Empty:
            if ending.is_set():
                return None
