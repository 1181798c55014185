"""The output layer prints, without Rich, exactly what Rich prints where Rich adds no styling.

``PlainConsole`` and ``markup_safe`` stand in for Rich on streams that are not terminals (cron,
CI, pipes). Each test here runs Rich itself on the same input and expects the same bytes:
random markup, random values escaped into markup, and every line of markup the CLI's
renderers print (read from their source), with random values in their fields.
"""

from __future__ import annotations

import ast
import io
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.errors import MarkupError

import moviectl.cli
from moviectl.cli.output import Output, PlainConsole, markup_safe, plain_text

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


def rich_prints(markup: str) -> str:
    """What the CLI's Rich console prints for ``markup`` on a stream that is not a terminal."""
    buf = io.StringIO()
    Console(file=buf, highlight=False, soft_wrap=True, emoji=False).print(markup)
    return buf.getvalue()


def plain_prints(markup: str) -> str:
    buf = io.StringIO()
    real, sys.stdout = sys.stdout, buf
    try:
        PlainConsole(stderr=False).print(markup)
    finally:
        sys.stdout = real
    return buf.getvalue()


def random_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, n)))


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


def test_escaped_values_print_as_themselves_wherever_they_stand():
    """A value with a lone ``[`` and another with a ``]`` further along the line make no tag,
    and backslashes before a ``[`` or at a value's end print as they are (rich.markup.escape
    gets both wrong: Rich dropped text, or raised MarkupError after the command's work)."""
    rng = random.Random(1)
    for _ in range(20_000):
        a, b = random_text(rng, 8), random_text(rng, 8)
        context = rng.choice(CONTEXTS)
        line = context.format(markup_safe(a), markup_safe(b))
        printed = plain_text(context).format(a, b).translate(dict.fromkeys((7, 8, 11, 12, 13)))
        assert rich_prints(line) == printed + "\n", (context, a, b)  # Rich drops BEL, CR...


def test_random_markup_prints_as_rich_prints_it():
    rng = random.Random(2)
    compared = 0
    for _ in range(20_000):
        s = random_text(rng, 12)
        try:
            expected = rich_prints(s)
        except MarkupError:  # markup Rich rejects is never printed (values come escaped)
            continue
        assert plain_prints(s) == expected, repr(s)
        compared += 1
    assert compared > 10_000


def test_escaped_values_print_as_themselves():
    rng = random.Random(3)
    for _ in range(20_000):
        value = random_text(rng, 10)
        line = f"[green]✓[/] {markup_safe(value)} [bold]{markup_safe(value)}[/]"
        assert plain_prints(line) == rich_prints(line), repr(value)


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
def test_every_renderer_line_prints_as_rich_prints_it(where, parts):
    rng = random.Random(where)
    for _ in range(300):
        line = ""
        for p in parts:  # a value inside a tag (`[{color}]`) is a style name
            value = "green" if line.endswith("[") else markup_safe(random_text(rng, 8))
            line += value if p is None else p
        assert plain_prints(line) == rich_prints(line), (where, line)


def test_tables_and_options_go_to_rich(capsys):
    from moviectl.cli.output import table

    PlainConsole(stderr=False).print(table(None, ["a", "b"], [("1", markup_safe("x[y]"))]))
    PlainConsole(stderr=False).print("a\tb")  # tabs: Rich expands them by cell width
    printed = capsys.readouterr().out
    assert "x[y]" in printed and "a       b" in printed


def test_a_pipe_gets_plain_lines_without_importing_rich(tmp_path):
    """Where stdout and stderr are not terminals, printing a result and an error loads no
    Rich module; the same code on a forced terminal uses Rich."""
    code = (
        "import sys\n"
        "from moviectl.cli.output import Output\n"
        "from moviectl.infra.errors import MoviectlError\n"
        "o = Output()\n"
        "o.emit({'p': 'a[b]c'}, lambda c, r: c.print(f\"[green]ok[/] {r['p']}\"))\n"
        "o.error(MoviectlError('bad [x] thing', hint='do [y]'))\n"
        "print(sorted(m for m in sys.modules if m.startswith('rich')), file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout == "ok a[b]c\n"
    assert res.stderr.splitlines() == ["error: bad [x] thing", "hint: do [y]", "[]"]


def test_output_picks_rich_where_colour_is_forced(monkeypatch):
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert not isinstance(Output().console, PlainConsole)
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    assert isinstance(Output().console, PlainConsole)  # pytest's captured stdout: no terminal
