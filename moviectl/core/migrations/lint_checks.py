"""`migrate lint`'s checks over PostgreSQL's own parse tree (pglast).

``analyse`` walks one parsed statement at a time, in the order the migrations render, and
keeps what it learns in ``State``: the transaction (BEGIN/COMMIT of the rendered stream; an
``autocommit_block`` renders as COMMIT ... BEGIN), the tables created in the range (new, so
empty: no finding on their indexes and constraints), and the constraints added. Imported
lazily (it imports pglast) by ``lint.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast
from pglast.enums import AlterTableType, ConstrType, NullTestType, ObjectType, TransactionStmtKind

from moviectl.core.migrations.lint_rules import SERIAL_TYPES, VOLATILE_FUNCTIONS


@dataclass
class Hit:
    rule: str
    table: str | None
    detail: str  # what this statement does, e.g. "CREATE INDEX ix_movies_year ON movies"


@dataclass
class AddedConstraint:
    table: str
    kind: str  # "check" | "fk"
    not_null_column: str | None  # CHECK (col IS NOT NULL)
    validated: bool
    tx: int | None  # the transaction it was added in (None: outside one)


@dataclass
class State:
    volatile: Callable[[str], bool] = lambda name: name in VOLATILE_FUNCTIONS
    validated_not_null: Callable[[str, str], bool] = lambda table, column: False
    new_tables: set[str] = field(default_factory=set)
    in_transaction: bool = False
    tx: int = 0
    constraints: dict[str, AddedConstraint] = field(default_factory=dict)
    not_null_checked: set[tuple[str, str]] = field(default_factory=set)

    def current_tx(self) -> int | None:
        return self.tx if self.in_transaction else None


def table_name(rv: Any) -> str:
    schema = getattr(rv, "schemaname", None)
    return rv.relname if not schema or schema == "public" else f"{schema}.{rv.relname}"


def walk(node: Any) -> Iterator[Any]:
    """Every node under ``node`` (itself included)."""
    if isinstance(node, tuple | list):
        for item in node:
            yield from walk(item)
    elif isinstance(node, ast.Node):
        yield node
        for name in node:
            yield from walk(getattr(node, name))


def _last_name(names: Any) -> str:
    return str(names[-1].sval).lower() if names else ""


def _volatile_calls(expr: Any, state: State) -> list[str]:
    return sorted(
        {
            _last_name(n.funcname)
            for n in walk(expr)
            if isinstance(n, ast.FuncCall) and state.volatile(_last_name(n.funcname))
        }
    )


def _not_null_column(expr: Any) -> str | None:
    if not (
        isinstance(expr, ast.NullTest)
        and expr.nulltesttype == NullTestType.IS_NOT_NULL
        and isinstance(expr.arg, ast.ColumnRef)
    ):
        return None
    fields = expr.arg.fields or ()
    return str(fields[-1].sval) if fields and isinstance(fields[-1], ast.String) else None


def analyse(stmt: Any, state: State) -> list[Hit]:
    """The hazards of one statement; updates ``state``."""
    if isinstance(stmt, ast.TransactionStmt):
        if stmt.kind in (
            TransactionStmtKind.TRANS_STMT_BEGIN,
            TransactionStmtKind.TRANS_STMT_START,
        ):
            state.in_transaction = True
            state.tx += 1
        elif stmt.kind in (
            TransactionStmtKind.TRANS_STMT_COMMIT,
            TransactionStmtKind.TRANS_STMT_ROLLBACK,
            TransactionStmtKind.TRANS_STMT_PREPARE,
        ):
            state.in_transaction = False
        return []
    if isinstance(stmt, ast.CreateStmt):
        state.new_tables.add(table_name(stmt.relation))
        return []
    if isinstance(stmt, ast.CreateTableAsStmt) and stmt.into is not None:
        state.new_tables.add(table_name(stmt.into.rel))
        return []
    if isinstance(stmt, ast.IndexStmt):
        return _index(stmt, state)
    if isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
        table = table_name(stmt.relation)
        return [hit for cmd in stmt.cmds or () for hit in _alter(cmd, table, state)]
    if isinstance(stmt, ast.RenameStmt):
        return _rename(stmt, state)
    if isinstance(stmt, ast.DropStmt):
        return _drop(stmt, state)
    if (
        isinstance(stmt, ast.ReindexStmt)
        and state.in_transaction
        and any(getattr(p, "defname", "") == "concurrently" for p in stmt.params or ())
    ):
        return [Hit("concurrently-in-transaction", None, "REINDEX CONCURRENTLY")]
    return []


def _index(stmt: Any, state: State) -> list[Hit]:
    table = table_name(stmt.relation)
    what = f"CREATE {'UNIQUE ' if stmt.unique else ''}INDEX {stmt.idxname or ''} ON {table}"
    if stmt.concurrent:
        if state.in_transaction:
            return [Hit("concurrently-in-transaction", table, f"{what} CONCURRENTLY")]
        return []
    if table in state.new_tables:
        return []
    return [Hit("index-not-concurrent", table, f"{what} without CONCURRENTLY")]


def _alter(cmd: Any, table: str, state: State) -> list[Hit]:
    sub = cmd.subtype
    new = table in state.new_tables
    if sub == AlterTableType.AT_AddConstraint:
        return _add_constraint(cmd.def_, table, state, new, f"ADD CONSTRAINT {cmd.def_.conname}")
    if sub == AlterTableType.AT_ValidateConstraint:
        return _validate(cmd.name, table, state, new)
    if new:
        return []
    if sub == AlterTableType.AT_AddColumn:
        return _add_column(cmd.def_, table, state)
    if sub == AlterTableType.AT_SetNotNull:
        column = cmd.name
        if (table, column) in state.not_null_checked or state.validated_not_null(table, column):
            return []
        return [Hit("set-not-null", table, f"ALTER COLUMN {column} SET NOT NULL")]
    if sub == AlterTableType.AT_AlterColumnType:
        return [Hit("column-type-change", table, f"ALTER COLUMN {cmd.name} TYPE")]
    if sub == AlterTableType.AT_DropColumn:
        return [Hit("drop-column", table, f"DROP COLUMN {cmd.name}")]
    return []


def _add_column(col: Any, table: str, state: State) -> list[Hit]:
    what = f"ADD COLUMN {col.colname}"
    hits = []
    if col.typeName is not None and _last_name(col.typeName.names) in SERIAL_TYPES:
        hits.append(Hit("volatile-default", table, f"{what} {_last_name(col.typeName.names)}"))
    for con in col.constraints or ():
        kind = con.contype
        if kind == ConstrType.CONSTR_DEFAULT and (calls := _volatile_calls(con.raw_expr, state)):
            funcs = ", ".join(f"{c}()" for c in calls)
            hits.append(Hit("volatile-default", table, f"{what} DEFAULT {funcs} (volatile)"))
        elif kind == ConstrType.CONSTR_IDENTITY:
            hits.append(Hit("volatile-default", table, f"{what} GENERATED AS IDENTITY"))
        elif kind == ConstrType.CONSTR_GENERATED:
            hits.append(Hit("volatile-default", table, f"{what} GENERATED ALWAYS AS (…) STORED"))
        else:
            hits += _add_constraint(con, table, state, False, f"{what} with a constraint")
    return hits


def _add_constraint(con: Any, table: str, state: State, new: bool, what: str) -> list[Hit]:
    kind = con.contype
    if kind in (ConstrType.CONSTR_CHECK, ConstrType.CONSTR_FOREIGN):
        is_check = kind == ConstrType.CONSTR_CHECK
        column = _not_null_column(con.raw_expr) if is_check else None
        validated = not con.skip_validation
        if con.conname:
            state.constraints[con.conname] = AddedConstraint(
                table, "check" if is_check else "fk", column, validated, state.current_tx()
            )
        if column and validated:
            state.not_null_checked.add((table, column))
        if validated and not new:
            rule = "check-without-not-valid" if is_check else "fk-without-not-valid"
            return [Hit(rule, table, f"{what} {'CHECK' if is_check else 'FOREIGN KEY'}")]
    elif (
        kind in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY, ConstrType.CONSTR_EXCLUSION)
        and not con.indexname
        and not new
    ):
        return [Hit("constraint-builds-index", table, f"{what} {kind.name[7:]}")]
    return []


def _validate(name: str, table: str, state: State, new: bool) -> list[Hit]:
    added = state.constraints.get(name)
    if added is None:
        return []
    hits = []
    same_tx = added.tx is not None and added.tx == state.current_tx()
    if same_tx and not added.validated and not new:
        rule = "check-without-not-valid" if added.kind == "check" else "fk-without-not-valid"
        hits.append(
            Hit(
                rule,
                table,
                f"VALIDATE CONSTRAINT {name} in the transaction that added it NOT VALID "
                "(that lock is still held while it scans)",
            )
        )
    added.validated = True
    if added.not_null_column:
        state.not_null_checked.add((added.table, added.not_null_column))
    return hits


def _rename(stmt: Any, state: State) -> list[Hit]:
    if stmt.relation is None:
        return []
    table = table_name(stmt.relation)
    new = table in state.new_tables
    if stmt.renameType == ObjectType.OBJECT_TABLE:
        if new:
            schema = table.rpartition(".")[0]
            state.new_tables.add(f"{schema}.{stmt.newname}" if schema else stmt.newname)
            return []
        return [Hit("rename-table", table, f"RENAME TABLE {table} TO {stmt.newname}")]
    if stmt.renameType == ObjectType.OBJECT_COLUMN and not new:
        return [Hit("rename-column", table, f"RENAME COLUMN {stmt.subname} TO {stmt.newname}")]
    return []


def _drop(stmt: Any, state: State) -> list[Hit]:
    if stmt.concurrent and state.in_transaction:
        return [Hit("concurrently-in-transaction", None, "DROP INDEX CONCURRENTLY")]
    if stmt.removeType != ObjectType.OBJECT_TABLE:
        return []
    hits = []
    for names in stmt.objects or ():
        parts = [str(n.sval) for n in names]
        table = ".".join(parts[1:] if parts[0] == "public" and len(parts) > 1 else parts)
        if table in state.new_tables:
            state.new_tables.discard(table)
        else:
            hits.append(Hit("drop-table", table, f"DROP TABLE {table}"))
    return hits
