"""The output layer: values escaped into markup print as themselves, and what is printed is
the same on a terminal and off one but for colour.

``markup_safe`` escapes every string of a result before a renderer puts it into markup. The
tests print with Rich itself: random values in random lines of markup, and in every line of
markup the CLI's renderers print (read from their source).
"""

from __future__ import annotations

import ast
import io
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import moviectl.cli
from moviectl.cli.output import Output, markup_safe

# what markup and the values in it are made of: tag starts and ends, escapes, tag names,
# control characters Rich drops, wide and combining characters, newlines
ALPHABET = [
    *"[]\\/=@#ab ",
    "[/]",
    "[b]",
    "\\[",
    "\r",
    "\x07",
    "\x0c",
    "\n",
    "é",
    "日",
    "e\u0301",
    ":x:",
]
DROPPED = dict.fromkeys((7, 8, 11, 12, 13))  # what Rich strips from text (BEL, BS, VT, FF, CR)
SLOT = "\ue000"  # stands in for a value: no markup, nothing Rich changes


def rich_prints(markup: str) -> str:
    """What the CLI's Rich console prints for ``markup`` on a stream that is not a terminal."""
    buf = io.StringIO()
    Console(file=buf, highlight=False, soft_wrap=True, emoji=False).print(markup)
    return buf.getvalue()


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, n)))


def expected(parts: list[str | None], values: list[str]) -> str:
    """The line Rich prints for ``parts`` (None: a value) with the values as themselves."""
    printed = rich_prints("".join(SLOT if p is None else p for p in parts))
    for value in values:
        printed = printed.replace(SLOT, value.translate(DROPPED), 1)
    return printed


# lines of markup with two values in them, as the renderers write them
CONTEXTS = [
    "{0}{1}",
    "{0} {1}",
    "[green]✓[/] {0} to {1}",
    "[bold]{0}[/] [red]{1}[/]",
    "{0}[b]y[/b]x{1}",
    "a{0}b{1}c",
    "{0}: {1}",
]


def _parts(context: str) -> list[str | None]:
    pieces = re.split(r"\{\d\}", context)
    return [x for piece in pieces[:-1] for x in (piece, None)] + [pieces[-1]]


def test_escaped_values_print_as_themselves_wherever_they_stand():
    """A value with a lone ``[`` and another with a ``]`` further along the line make no tag,
    and backslashes before a ``[`` or at a value's end print as they are (rich.markup.escape
    gets both wrong: Rich dropped text, or raised MarkupError after the command's work)."""
    rng = random.Random(1)
    for _ in range(20_000):
        a, b = random_text(rng, 8), random_text(rng, 8)
        context = rng.choice(CONTEXTS)
        line = context.format(markup_safe(a), markup_safe(b))
        assert rich_prints(line) == expected(_parts(context), [a, b]), (context, a, b)


def _print_templates() -> list[tuple[str, list[str | None]]]:
    """Every ``….print(<string or f-string>)`` in the CLI package: (where, parts), a part
    None where the f-string puts a value."""
    found = []
    for path in sorted(Path(moviectl.cli.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "print"
                and len(node.args) == 1
            ):
                continue
            arg = node.args[0]
            where = f"{path.name}:{node.lineno}"
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((where, [arg.value]))
            elif isinstance(arg, ast.JoinedStr):
                parts: list[str | None] = [
                    v.value if isinstance(v, ast.Constant) else None for v in arg.values
                ]
                found.append((where, parts))
    return found


TEMPLATES = _print_templates()


def test_the_renderers_lines_are_found():
    assert len(TEMPLATES) > 40
    assert any("backup of" in "".join(p or "" for p in parts) for _, parts in TEMPLATES)


@pytest.mark.parametrize("where,parts", TEMPLATES, ids=[w for w, _ in TEMPLATES])
def test_every_renderer_line_prints_its_values_as_themselves(where, parts):
    rng = random.Random(where)
    for _ in range(100):
        line, values, layout = "", [], []
        for p in parts:  # a value inside a tag (`[{color}]`) is a style name
            if p is not None:
                line += p
                layout.append(p)
            elif line.endswith("["):
                line += "green"
                layout.append("green")
            else:
                value = random_text(rng, 8)
                line += markup_safe(value)
                values.append(value)
                layout.append(None)
        assert rich_prints(line) == expected(layout, values), (where, line)


def test_a_table_prints_its_values_as_themselves(capsys):
    from moviectl.cli.output import table

    Output().console.print(table(None, ["a", "b"], [("1", markup_safe("x[y]"))]))
    assert "x[y]" in capsys.readouterr().out


# prints a result and an error as a command does
PRINTS = (
    "from moviectl.cli.output import Output\n"
    "from moviectl.infra.errors import MoviectlError\n"
    "o = Output()\n"
    "o.emit({'p': 'a[b]c'}, lambda c, r: c.print(f\"[green]ok[/] {r['p']}\"))\n"
    "o.error(MoviectlError('bad [x] thing', hint='do [y]'))\n"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_a_pipe_gets_plain_lines_and_a_terminal_the_same_in_colour():
    """What is printed does not depend on the terminal; only colour does."""
    plain, coloured = (
        subprocess.run(
            [sys.executable, "-c", PRINTS],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "", "COLUMNS": "100", **extra},
        )
        for extra in ({}, {"FORCE_COLOR": "1"})
    )
    assert plain.stdout == "ok a[b]c\n"
    assert plain.stderr.splitlines() == ["error: bad [x] thing", "hint: do [y]"]
    assert "\x1b[" in coloured.stdout + coloured.stderr
    assert ANSI.sub("", coloured.stdout) == plain.stdout
    assert ANSI.sub("", coloured.stderr) == plain.stderr
