"""Plain SQL for psql that cannot run a meta-command pg_dump does not write.

psql executes ``\\!`` (a shell), ``\\o |cmd``, ``\\copy ... program`` and friends wherever a
backslash stands outside a string, a comment or COPY data. A plain backup is input moviectl
did not necessarily make (its manifest's checksum only proves the two files agree), so every
line psql will read goes through ``SqlGuard`` first: it lexes the SQL as psql does (quotes,
E'' strings, dollar quotes, nested comments, parentheses, BEGIN ATOMIC bodies, COPY ... FROM
stdin data up to ``\\.``) and refuses any meta-command outside pg_dump's own (``\\connect DB``,
``\\restrict KEY`` / ``\\unrestrict KEY``). Where psql versions or settings could lex a
construct two ways (``standard_conforming_strings``, a multi-byte client encoding, numbers
glued to identifiers), the guard refuses instead of guessing. Memory is bounded: a line
outside COPY data may be at most ``MAX_LINE`` bytes.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from moviectl.infra.errors import InputFileError

if TYPE_CHECKING:
    from moviectl.infra.watchdog import StallWatch

MAX_LINE = 16 * 1024 * 1024

_ALLOWED_META = re.compile(
    rb"\\(?:(?:connect|c)(?:[ \t]+-reuse-previous=on)?[ \t]+"
    rb"(?:[A-Za-z_][A-Za-z0-9_$]*|\"dbname='(?:[^'\\\"\r\n]|'')*'\")"
    rb"|(?:un)?restrict[ \t]+[A-Za-z0-9]{1,128})[ \t]*\r?\n?"
)
_WORD = re.compile(rb"[A-Za-z_\x80-\xff][A-Za-z0-9_$\x80-\xff]*")
_NUMBER = re.compile(
    rb"0[xXoObB][0-9A-Fa-f_]+|[0-9][0-9_]*(?:\.(?![.])[0-9_]*)?(?:[eE][+-]?[0-9_]+)?|\.[0-9][0-9_]*"
    rb"(?:[eE][+-]?[0-9_]+)?"
)
_DOLQ = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_PARAM = re.compile(rb"\$[0-9]+")
_VARIABLE = re.compile(rb":[A-Za-z0-9_\x80-\xff]+")
# Characters with no meaning to the lexer beyond being a token of their own.
_BORING = re.compile(rb"[^A-Za-z_\x80-\xff0-9'\"$\\;()\-/:.\s]+")
_SPACE = re.compile(rb"\s+")
_TRACKED = {b"create": b"c", b"function": b"f", b"procedure": b"p", b"or": b"o", b"replace": b"r"}


class SqlGuard:
    """Feed it the SQL line by line (bytes, with their newlines); it raises
    ``InputFileError`` at the first line psql would run as a forbidden meta-command."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.line_no = 0
        self.state = "normal"  # normal | quote | equote | ident | dollar | comment | copy
        self.dollar_tag = b""
        self.comment_depth = 0
        self.paren = 0
        self.begin = 0
        self._new_statement()

    def _new_statement(self) -> None:
        self.tokens = 0
        self.idents: list[bytes] = []
        self.ident_count = 0
        self.is_copy = False
        self.copy_step = ""  # "" | seek | from | stdin | done

    def _refuse(self, why: str) -> InputFileError:
        return InputFileError(
            f"{self.source}, line {self.line_no}: {why}; nothing was restored",
            hint="plain SQL may hold no psql meta-command but pg_dump's own (\\connect, "
            "\\restrict); restore only backups you made, or check where this file came from",
        )

    def feed(self, line: bytes) -> None:
        self.line_no += 1
        if self.state == "copy":
            if line in (b"\\.\n", b"\\.\r\n", b"\\."):
                self.state = "normal"
            return
        if len(line) > MAX_LINE:
            raise self._refuse(f"a line of over {MAX_LINE // (1024 * 1024)} MB outside COPY data")
        self._lex(line)

    def finish(self) -> None:
        """The end of the input (nothing to check: psql stops reading there too)."""

    # -- the lexer ---------------------------------------------------------------------

    def _token(self, word: bytes | None = None, *, ident: bool = False) -> None:
        """One SQL token of the current statement (``word``: an unquoted identifier)."""
        self.tokens += 1
        w = word.lower() if word is not None else None
        if self.tokens == 1:
            self.is_copy = w == b"copy"
            self.copy_step = "seek" if self.is_copy else ""
        elif self.is_copy:
            if self.tokens == 2 and word is None and self._last_char == b"(":
                self.copy_step = "done"  # COPY (query) TO ...
            elif self.copy_step == "seek" and self.paren == 0 and w in (b"from", b"to"):
                self.copy_step = "from" if w == b"from" else "done"
            elif self.copy_step == "from":
                self.copy_step = "stdin" if w == b"stdin" else "done"
        if ident and word is not None:  # psql's heuristic for BEGIN ATOMIC bodies
            if self.ident_count < 4:
                self.idents.append(_TRACKED.get(w or b"", b"\0"))
            self.ident_count += 1
            ids = [*self.idents, b"\0", b"\0", b"\0", b"\0"]
            if (
                ids[0] == b"c"
                and (
                    ids[1] in (b"f", b"p") or (ids[1:3] == [b"o", b"r"] and ids[3] in (b"f", b"p"))
                )
                and self.paren == 0
            ):
                if w == b"begin" or (w == b"case" and self.begin >= 1):
                    self.begin += 1
                elif w == b"end" and self.begin > 0:
                    self.begin -= 1

    _last_char = b""

    def _lex(self, line: bytes) -> None:
        i, n = 0, len(line)
        while i < n:
            st = self.state
            if st == "comment":
                m = re.compile(rb"/\*|\*/").search(line, i)
                if not m:
                    return
                i = m.end()
                self.comment_depth += 1 if m.group() == b"/*" else -1
                if self.comment_depth == 0:
                    self.state = "normal"
                continue
            if st == "dollar":
                j = line.find(self.dollar_tag, i)
                if j < 0:
                    return
                i, self.state = j + len(self.dollar_tag), "normal"
                continue
            if st == "ident":
                j = line.find(b'"', i)
                if j < 0:
                    return
                if line[j + 1 : j + 2] == b'"':
                    i = j + 2
                    continue
                i, self.state = j + 1, "normal"
                continue
            if st in ("quote", "equote"):
                i = self._in_string(line, i, st == "equote")
                continue
            if self.state == "copy":  # data starts on the next line: the rest must be empty
                rest = line[i:].strip()
                if rest and not rest.startswith(b"--"):
                    raise self._refuse("text after COPY ... FROM stdin; on its line")
                return
            i = self._normal(line, i)

    def _in_string(self, line: bytes, i: int, escapes: bool) -> int:
        n = len(line)
        while i < n:
            m = re.compile(rb"['\\]").search(line, i)
            if not m:
                return n
            j = m.start()
            if line[j : j + 1] == b"\\":
                if escapes:
                    if j > 0 and line[j - 1] >= 0x80:
                        raise self._refuse(
                            "a backslash after a non-ASCII byte in an E'' string (a multi-byte "
                            "client encoding would read it differently)"
                        )
                    i = j + 2
                    continue
                if line[j + 1 : j + 2] == b"'":  # ends the string or not: standard_conforming
                    raise self._refuse(
                        "a backslash before a quote in a string (read differently when "
                        "standard_conforming_strings is off)"
                    )
                i = j + 1
                continue
            if line[j + 1 : j + 2] == b"'":  # '' inside a string
                i = j + 2
                continue
            self.state = "normal"
            return j + 1
        return n

    def _normal(self, line: bytes, i: int) -> int:
        c = line[i : i + 1]
        m = _SPACE.match(line, i)
        if m:
            return m.end()
        m = _BORING.match(line, i)
        if m:
            self._last_char = c
            self._token()
            return i + 1
        if c == b"\\":
            if self.tokens or i != 0 or not _ALLOWED_META.fullmatch(line):
                shown = line.decode("utf-8", "replace").strip()[:80]
                raise self._refuse(f"a psql meta-command pg_dump does not write: {shown!r}")
            return len(line)
        self._last_char = c
        if c == b"'":
            self.state = "quote"
            self._token()
            return i + 1
        if c == b'"':
            self.state = "ident"
            self._token()
            return i + 1
        if c == b"-" and line[i + 1 : i + 2] == b"-":
            return len(line)
        if c == b"/" and line[i + 1 : i + 2] == b"*":
            self.state, self.comment_depth = "comment", 1
            return i + 2
        if c == b"$":
            m = _DOLQ.match(line, i)
            if m:
                self.state, self.dollar_tag = "dollar", m.group()
                self._token()
                return m.end()
            m = _PARAM.match(line, i)
            end = m.end() if m else i + 1
            if (m and _WORD.match(line, end)) or line[end : end + 1] == b"$":
                raise self._refuse("a parameter glued to an identifier (psql versions differ)")
            self._token()
            return end
        if c == b":":
            if line[i + 1 : i + 2] == b":":
                self._token()
                return i + 2
            m = _VARIABLE.match(line, i)
            if m:
                name = m.group()[1:]
                if name[:1].isalpha() and name.upper() == name:  # psql's own variables
                    raise self._refuse(f"a psql variable reference :{name.decode()}")
                self._token()
                return m.end()
            self._token()
            return i + 1
        if c == b"(":
            self._token()
            self.paren += 1
            return i + 1
        if c == b")":
            self._token()
            if self.paren > 0:
                self.paren -= 1
            return i + 1
        if c == b";":
            if self.paren == 0 and self.begin == 0:
                copy_in = self.is_copy and self.copy_step == "stdin"
                self._new_statement()
                if copy_in:
                    self.state = "copy"
            else:
                self._token()
            return i + 1
        if c.isdigit() or (c == b"." and line[i + 1 : i + 2].isdigit()):
            m = _NUMBER.match(line, i)
            end = m.end() if m else i + 1
            nxt = line[end : end + 1]
            if nxt == b"$" or _WORD.match(nxt):
                raise self._refuse("a number glued to an identifier (psql versions differ)")
            self._token()
            return end
        m = _WORD.match(line, i)
        if m:
            word = m.group()
            nxt = line[m.end() : m.end() + 1]
            low = word.lower()
            if nxt == b"'" and low in (b"e", b"b", b"x", b"n"):
                self.state = "equote" if low == b"e" else "quote"
                self._token()
                return m.end() + 1
            if low == b"u" and line[m.end() : m.end() + 2] in (b"&'", b'&"'):
                self.state = "quote" if line[m.end() + 1 : m.end() + 2] == b"'" else "ident"
                self._token()
                return m.end() + 2
            self._token(word, ident=True)
            return m.end()
        self._token()  # ".", "-" or "/" alone
        return i + 1


def lines_of(fh: IO[bytes]) -> Iterator[bytes]:
    """The lines of ``fh`` in bounded memory: one longer than ``MAX_LINE`` comes in pieces
    (COPY data may hold long lines; outside it, the guard refuses the first piece)."""
    while True:
        line = fh.readline(MAX_LINE + 1)
        if not line:
            return
        yield line


def check_sql_file(path: Path) -> None:
    """Read the whole file through the guard before psql sees any of it."""
    guard = SqlGuard(path.name)
    with open(path, "rb") as fh:
        for line in lines_of(fh):
            guard.feed(line)
    guard.finish()


def run_psql_guarded(
    psql: list[str],
    lines: Iterator[bytes],
    source: str,
    env: dict[str, str],
    *,
    watch: StallWatch | None = None,
    on_abort: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Feed ``lines`` to ``psql -f -`` through a ``SqlGuard``: psql reads exactly what was
    checked (a file changed after its check cannot slip a line past). A refused line kills
    psql before it is written; ``on_abort`` stops whatever produces ``lines``."""
    import tempfile

    from moviectl.infra.pgtools import child_io, popen_child

    guard = SqlGuard(source)
    with tempfile.TemporaryFile() as err:
        sink = popen_child(
            [*psql, "-f", "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        assert sink.stdin is not None

        def abort() -> None:
            sink.kill()
            if on_abort:
                on_abort()

        try:
            if watch is not None:
                watch.track(lambda: child_io(sink.pid))
                watch.on_stall(abort)
            with watch if watch is not None else contextlib.nullcontext():
                try:
                    for line in lines:
                        guard.feed(line)
                        sink.stdin.write(line)
                except BrokenPipeError:
                    if on_abort:  # psql stopped at the first error; its stderr says why
                        on_abort()
                finally:
                    with contextlib.suppress(BrokenPipeError):
                        sink.stdin.close()
                code = sink.wait()
            if watch is not None and watch.stalled:
                raise watch.error()
        except BaseException:
            abort()
            sink.wait()
            raise
        err.seek(0)
        text = err.read().decode(errors="replace")
    return subprocess.CompletedProcess([], code, "", text)
