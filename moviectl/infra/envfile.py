"""The ``.env`` file: keys, values and the line each was set on.

The syntax is python-dotenv's (``export``, quotes, inline comments, multi-line quoted
values), with Docker Compose's rule for ``${VAR}`` and ``${VAR:-default}``: expanded in
unquoted and double-quoted values, never in single-quoted ones, so a password may contain
``${``. python-dotenv's public API expands inside single quotes too, and its parser is
private: hence these few lines.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path

from moviectl.infra.errors import ConfigError

_BINDING = re.compile(
    r"""[^\S\r\n]*(?:export[^\S\r\n]+)?
    (?P<key>'[^']+'|[^=\#\s]+)[^\S\r\n]*
    (?:(?P<eq>=[^\S\r\n]*)
       (?:'(?P<single>(?:\\.|[^'\\])*)'|"(?P<double>(?:\\.|[^"\\])*)"|(?P<plain>(?!['"])[^\r\n]*)))?
    [^\S\r\n]*(?:\#[^\r\n]*)?(?:\r\n|\n|\r|$)""",
    re.VERBOSE | re.DOTALL,
)
_SKIP = re.compile(r"\s*(?:#[^\r\n]*)?(?:\r\n|\n|\r|$)")
_REST = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)?")
_VARIABLE = re.compile(r"\$\{(?P<name>[^}:]*)(?::-(?P<default>[^}]*))?\}")
_DOUBLE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_SINGLE_ESCAPES = re.compile(r"\\[\\']")
MAX_BYTES = 256 * 1024


def read_dotenv(path: str | os.PathLike[str]) -> dict[str, tuple[str | None, int]]:
    """Each key's (value, line number); {} when there is no file. A key written without
    ``=`` has the value None. A line that does not parse is skipped, as dotenv skips it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return {}
    except OSError as exc:  # unreadable folder, a loop of links: say so, don't guess
        raise ConfigError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    if not stat.S_ISREG(mode):  # a folder is a mistake; a FIFO would block the read
        raise ConfigError(
            f"{os.fspath(path)} is not a regular file",
            hint="settings are read from a plain .env file: move what is there aside",
        )
    if os.path.getsize(path) > MAX_BYTES:  # a settings file, not data: bounded work
        raise ConfigError(
            f"{os.fspath(path)} is larger than {MAX_BYTES // 1024} KiB",
            hint="a .env file holds settings: is this the right file?",
        )
    try:
        text = Path(path).read_text(encoding="utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{os.fspath(path)} is not valid UTF-8 (byte {exc.start})",
            hint=f"re-encode {os.fspath(path)} as UTF-8",
        ) from None
    values: dict[str, tuple[str | None, int]] = {}
    env = dict(os.environ)  # what ${VAR} sees: the environment, then the file's own keys
    pos, line = 0, 1
    while pos < len(text):
        skip = _SKIP.match(text, pos)
        if skip is not None and skip.end() > pos:
            line += _lines(skip.group())
            pos = skip.end()
            continue
        m = _BINDING.match(text, pos)
        if m is None:
            m = _REST.match(text, pos)
            assert m is not None  # matches the empty string at worst
            line, pos = line + _lines(m.group()), max(m.end(), pos + 1)
            continue
        key = m["key"].strip("'")
        value = _value(m, env)
        values[key] = (value, line)
        if value is not None:
            env[key] = value
        line += _lines(m.group())
        pos = m.end()
    return values


def _lines(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _value(m: re.Match[str], env: dict[str, str]) -> str | None:
    if m["eq"] is None:
        return None
    if m["single"] is not None:
        return _SINGLE_ESCAPES.sub(_unescape, m["single"])
    if m["double"] is not None:
        return _expand(_DOUBLE_ESCAPES.sub(_unescape, m["double"]), env)
    plain = m["plain"] or ""
    if len(m["eq"]) > 1 and plain.startswith("#"):
        return ""  # `KEY= # comment`
    return _expand(re.sub(r"\s+#.*", "", plain).rstrip(), env)


def _unescape(m: re.Match[str]) -> str:
    return codecs.decode(m.group(0), "unicode-escape")


def _expand(value: str, env: dict[str, str]) -> str:
    """``${VAR}`` and ``${VAR:-default}``: the file's own earlier keys win over the
    environment, as in python-dotenv."""
    return _VARIABLE.sub(lambda m: env.get(m["name"]) or m["default"] or "", value)
