"""The output layer: the only place that knows Rich and ``--json``.

Core functions return dataclasses; commands hand them to ``Output.emit`` with a
renderer for people. In JSON mode every command prints exactly one JSON
document on stdout (errors included); human chatter goes to stderr.

People's output is printed by Rich, terminal or not: what is printed is the same either
way, only colour (and spinners, progress bars) needs a terminal. Rich is imported on first
use, so a ``--json`` run that succeeds never loads it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from moviectl.infra.errors import MoviectlError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

R = TypeVar("R")


def write_stdout(text: str) -> None:
    """Write to stdout, or nowhere when it was closed before start (``>&-``: Python's
    ``sys.stdout`` is None): a command that worked still worked."""
    if sys.stdout is not None:
        sys.stdout.write(text)
        sys.stdout.flush()


def reader_gone() -> int:
    """`moviectl … | head`: the reader left. Say nothing more on stdout, as cat and git do
    (the interpreter's last flush would fail too), and exit as a shell reports SIGPIPE."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


PIPE_WIDTH = 240


class Output:
    def __init__(self, *, json_mode: bool = False, verbose: bool = False) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        self._console: Console | None = None
        self._err: Console | None = None

    @property
    def console(self) -> Console:
        """Rich's console on stdout."""
        if self._console is None:
            self._console = rich_console(stderr=False)
        return self._console

    @property
    def err(self) -> Console:
        """Rich's console on stderr."""
        if self._err is None:
            self._err = rich_console(stderr=True)
        return self._err

    @property
    def interactive(self) -> bool:
        """Is there a person at a terminal on stderr? (spinners, progress bars)"""
        return not self.json_mode and self.err.is_terminal

    def emit(self, result: R, render: Callable[[Console, R], None] | None = None) -> None:
        """Print a command's result: one JSON document, or the human rendering (given the
        result with its strings escaped for Rich's markup: ``markup_safe``)."""
        if self.json_mode:
            from moviectl.infra.jsonable import jsonable  # decimal, uuid: only for --json

            write_stdout(json.dumps(jsonable(result), indent=2, sort_keys=False) + "\n")
        elif render is not None:
            render(self.console, markup_safe(result))
        else:
            self.console.print(result)

    def info(self, message: str) -> None:
        """Progress chatter for people (stderr; silent in JSON mode)."""
        if not self.json_mode:
            self.err.print(message)

    def error(self, exc: MoviectlError) -> None:
        if self.json_mode:
            from moviectl.infra.jsonable import jsonable

            write_stdout(json.dumps({"ok": False, **jsonable(exc.to_dict())}, indent=2) + "\n")
        self.err.print(f"[bold red]error:[/] {_escape(exc.message)}")
        if exc.hint:
            self.err.print(f"[dim]hint:[/] {_escape(exc.hint)}")

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner on a terminal; nothing otherwise."""
        if self.interactive:
            with self.err.status(message):
                yield
        else:
            yield


def rich_console(*, stderr: bool) -> Console:
    """Rich's own console on stdout or stderr (Rich imported now)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            """The reader left (`moviectl … | head`): exit as a shell reports SIGPIPE, as
            the JSON path does (Rich's own choice is exit 1, "a check failed" here)."""
            self.quiet = True
            raise SystemExit(reader_gone())

    # emoji=False: a name like `a:fire:b` prints as itself (markup_safe escapes [ only)
    console = _Console(stderr=stderr, highlight=False, soft_wrap=True, emoji=False)
    if not stderr and not console.is_terminal and "COLUMNS" not in os.environ:
        # a pipe or a file: a table row stays one line (grep, awk), not Rich's 80 columns
        console.width = PIPE_WIDTH
    return console


def markup_safe(obj: R) -> R:
    """A copy of a result in which every string is Rich-escaped: renderers interpolate values
    into markup, and a path or name like ``/tmp/x[/x]`` must print as itself."""
    return cast("R", _markup_safe(obj))


def _markup_safe(obj: Any) -> Any:
    if isinstance(obj, str):
        return _escape(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            f.name: _markup_safe(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init
        }
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, dict):
        return {k: _markup_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_markup_safe(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_markup_safe(v) for v in obj)
    return obj


# a run of backslashes before a "[", or at the end of a value
_BRACKET_OR_END = re.compile(r"(\\*)(\[|\Z)")
_EMPTY_TAG = "[b][/b]"  # prints nothing, in colour or not; ends a run of backslashes


def _escape(text: str) -> str:
    """``text`` as markup that prints as itself wherever it stands in a line of markup.

    ``rich.markup.escape`` escapes whole tags only, so a value with a lone ``[`` and a value
    with a ``]`` further along the line make a tag between them (Rich drops the text, or
    raises ``MarkupError``), and backslashes before a ``[`` or at a value's end print halved
    or not depending on what follows. Here every ``[`` is ``\\[`` (a ``[`` in any context),
    and backslashes before one, or at the end, are doubled and closed by an empty tag (so
    they are halved back, whatever follows).
    """

    def one(m: re.Match[str]) -> str:
        run, bracket = m.groups()
        return (run * 2 + _EMPTY_TAG if run else "") + ("\\[" if bracket else "")

    return _BRACKET_OR_END.sub(one, text)


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))  # values come markup_safe
    return t


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{sec:02d}s"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class PullProgress:
    """Renders Docker pull events as a Rich progress bar per layer (a callable)."""

    def __init__(self, output: Output) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            console=output.err,
            transient=True,
        )
        self.tasks: dict[str, Any] = {}
        self.started = False

    def __call__(self, event: dict[str, Any]) -> None:
        layer = event.get("id")
        detail = event.get("progressDetail") or {}
        if not layer or "total" not in detail:
            return
        if not self.started:
            self.progress.start()
            self.started = True
        if layer not in self.tasks:
            self.tasks[layer] = self.progress.add_task(f"layer {layer}", total=detail["total"])
        self.progress.update(
            self.tasks[layer], completed=detail.get("current", 0), total=detail["total"]
        )
        if event.get("status") in ("Pull complete", "Already exists"):
            self.progress.update(self.tasks[layer], completed=detail["total"])

    def __del__(self) -> None:
        if self.started:
            self.progress.stop()


class RowProgress:
    """A Rich progress bar for row loads (rows, rows/s, ETA) on a terminal."""

    def __init__(self, output: Output, label: str) -> None:
        self.output, self.label = output, label
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> RowProgress:
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=self.output.err,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.label, total=total, rate="")
        speed = self.progress.tasks[0].speed
        rate = f"{speed:,.0f} rows/s" if speed else ""
        self.progress.update(self.task, completed=done, total=total, rate=rate)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


class ByteProgress:
    """Bytes written so far, as a live line on a terminal."""

    def __init__(self, output: Output, label: str) -> None:
        self.output, self.label = output, label
        self.status: Any = None

    def __enter__(self) -> ByteProgress:
        return self

    def __call__(self, done: int) -> None:
        if self.status is None:
            self.status = self.output.err.status(self.label)
            self.status.start()
        self.status.update(f"{self.label}: {fmt_bytes(done)} written")

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()
