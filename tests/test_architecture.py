"""The architecture holds: no import cycles, no private names across modules, small modules,
no `fmt: skip`, one explicit command list, and the README's exit-code table is the enum.

The layer contracts themselves are `lint-imports` (pyproject.toml), run by .ci/run.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import typer.main
from typer.testing import CliRunner

from moviectl.cli.app import COMMANDS, HELP_ORDER, app
from moviectl.infra.errors import ExitCode

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moviectl"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_import_cycles_between_modules():
    """Every import counts, lazy ones inside functions too (grimp reads them all)."""
    graph = grimp.build_graph("moviectl", exclude_type_checking_imports=True)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert cycles == []


def test_no_private_names_imported_across_modules():
    """What two modules share is public and lives where both can import it."""
    offenders = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("moviectl"):
                private = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_") and not a.name.endswith("__")
                ]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module} {private}")
    assert offenders == []


def test_modules_stay_small_and_ruff_format_wins():
    too_long = {
        str(p.relative_to(ROOT)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert too_long == {}
    skips = [
        f"{p.relative_to(ROOT)}:{no}"
        for p in [*_modules(), *(ROOT / "tests").rglob("*.py")]
        for no, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"#\s*fmt:\s*(skip|off)", line)
    ]
    assert skips == []


def test_every_group_has_the_commands_the_readme_promises():
    group = typer.main.get_command(app)
    promised = {
        "db": {"up", "down", "status", "logs", "shell"},
        "migrate": {"status", "history", "down", "new", "check", "lint"},
        "backup": {"list", "verify", "prune"},
        "testdb": {"create", "drop", "list", "prune", "template"},
        "config": {"show"},
    }
    for name, subcommands in promised.items():
        assert subcommands <= set(group.commands[name].commands), name  # type: ignore[attr-defined]


def test_help_lists_the_commands_in_the_one_registered_order():
    group = typer.main.get_command(app)
    assert set(group.commands) == set(HELP_ORDER)  # type: ignore[attr-defined]
    assert len(HELP_ORDER) == len(COMMANDS)
    out = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    listed = [name for name in HELP_ORDER if re.search(rf"^\W*{name}\s", out, re.MULTILINE)]
    positions = [re.search(rf"^\W*{name}\s", out, re.MULTILINE).start() for name in listed]  # type: ignore[union-attr]
    assert listed == list(HELP_ORDER) and positions == sorted(positions), out


def test_readme_exit_code_table_is_the_enum():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", section, re.MULTILINE)
    assert [(int(code), name) for code, name in rows] == [(int(c), c.name) for c in ExitCode]


def test_readme_layout_paragraph_names_every_package():
    """The README's layout paragraph and docs/architecture.md name what the tree holds."""
    readme = (ROOT / "README.md").read_text()
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(
        str(p.parent.relative_to(ROOT)) + "/"
        for p in PACKAGE.rglob("__init__.py")
        if "_alembic" not in str(p) and "_compose" not in str(p)
    )
    assert [p for p in packages if p not in readme] == []
    modules = sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in _modules()
        if "_alembic" not in str(p) and (p.name != "__init__.py" or "def " in p.read_text())
    )
    # each module is listed under its package's heading by its path inside the layer
    listed = set(re.findall(r"^- `([\w/]+\.py)`", architecture, re.MULTILINE))
    layers = ("cli/", "core/", "infra/")
    expected = {m.split("/", 1)[1] if m.startswith(layers) else m for m in modules}
    expected -= {"__main__.py"}
    assert sorted(expected - listed) == [] and sorted(listed - expected) == []


def test_every_test_docs_safety_names_exists():
    """docs/safety.md names the test that tries to break each invariant: each one is real."""
    text = (ROOT / "docs" / "safety.md").read_text()
    files = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    missing, current = [], None
    for path, names in re.findall(r"((?:[\w/]*test_\w+\.py)?)((?:::\w+(?:\[[^\]]*\])?)+)", text):
        current = files.get(Path(path).name) if path else current
        source = current.read_text() if current else ""
        for name in re.findall(r"::(\w+)", names):
            if f"def {name}(" not in source:
                missing.append(f"{current}::{name}")
    assert missing == []
