"""The migration scripts' history read without importing them (nor Alembic, nor SQLAlchemy).

Alembic imports every script, and itself pulls in SQLAlchemy: about a second before
`migrate status` can read one row. The common case, one straight line of scripts that
spell ``revision`` / ``down_revision`` as plain literals, is read here with ``ast`` the way
Alembic would see it. Anything else (a branch, a merge, a cycle, ``depends_on``, a
computed or conditional assignment, a syntax error) is None: the caller asks Alembic, so
its answers and its errors stay the ones users get today.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# which files Alembic loads from versions/ (alembic.script.base._only_source_rev_file)
_SCRIPT_FILE = re.compile(r"(?!\.\#|__init__)(.*\.py)$")
# ids Alembic accepts and that name no symbol (head, base) or relative step (-1, @)
_PLAIN_ID = re.compile(r"\w+")
_SPECIAL = {"head", "heads", "base"}
_NAMES = {"revision", "down_revision", "branch_labels", "depends_on"}


@dataclass(frozen=True)
class ScriptInfo:
    revision: str
    down_revision: str | None
    doc: str  # Alembic's Script.doc: the docstring, stripped, up to its first blank line


def _literals(tree: ast.Module) -> dict[str, object] | None:
    """The module's top-level ``name = <literal>`` for the names Alembic reads, or None
    when any of them is bound another way (in a branch, a loop, an import, twice)."""
    found: dict[str, object] = {}
    simple: set[int] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value = stmt.target, stmt.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in _NAMES:
            if target.id in found:
                return None
            try:
                found[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return None
            simple.add(id(target))
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound = {node.id} if id(node) not in simple else set()
        elif isinstance(node, ast.alias):
            bound = {node.asname or node.name}
        elif isinstance(node, ast.Global | ast.Nonlocal):
            bound = set(node.names)
        else:
            continue
        if bound & _NAMES:
            return None  # bound some other way too: only running the module would tell
    return found


def _doc(tree: ast.Module) -> str:
    raw = ast.get_docstring(tree, clean=False) or ""
    return re.split("\n\n", raw.strip())[0]


def read_script(path: Path) -> ScriptInfo | None:
    """One script as Alembic reads it, or None when only importing it would tell."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    found = _literals(tree)
    if found is None or found.get("branch_labels") is not None:
        return None
    if found.get("depends_on") is not None or "down_revision" not in found:
        return None
    rev, down = found.get("revision"), found["down_revision"]
    if not isinstance(rev, str) or not _PLAIN_ID.fullmatch(rev) or rev in _SPECIAL:
        return None
    if down is not None and not isinstance(down, str):
        return None  # a merge (a tuple), or something Alembic would refuse
    return ScriptInfo(rev, down, _doc(tree))


def linear_chain(versions: Path) -> list[ScriptInfo] | None:
    """The scripts oldest first when they form one straight line from base to head;
    None when Alembic must be asked (see the module's docstring). No scripts: []."""
    if not versions.is_dir():
        return None
    scripts: dict[str, ScriptInfo] = {}
    by_parent: dict[str | None, ScriptInfo] = {}
    try:
        files = [p for p in versions.iterdir() if _SCRIPT_FILE.match(p.name)]
    except OSError:
        return None
    for path in files:
        info = read_script(path) if path.is_file() else None
        if info is None or info.revision in scripts or info.down_revision in by_parent:
            return None  # unreadable here, a duplicate id, or a branch point
        scripts[info.revision] = info
        by_parent[info.down_revision] = info
    chain: list[ScriptInfo] = []
    step = by_parent.get(None)
    while step is not None and len(chain) <= len(scripts):
        chain.append(step)
        step = by_parent.get(step.revision)
    if len(chain) != len(scripts):
        return None  # a cycle, a missing parent, two bases: Alembic's errors say which
    return chain
