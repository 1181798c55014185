"""`migrate check`: compare the models with the live database, in plain words.

Alembic's autogenerate compares tables, columns, types, nullability, server defaults
(here without running them), indexes, unique constraints and foreign keys. CHECK
constraints and triggers come from the catalog of the models' schema: a CHECK's definition
is compared after the server normalises the model's expression (on a temporary copy of the
table's columns, rolled back), triggers with the models' ``info["triggers"]``. Where no
temporary table may be made (no TEMP privilege, a hot standby), CHECK definitions are not
compared and ``notes`` says so.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from moviectl.core.migrations.scripts import head_revision
from moviectl.infra.engine import db_errors, make_engine
from moviectl.infra.settings import Settings


@dataclass
class Drift:
    kind: str  # table, column, type, nullable, default, index, unique, foreign_key, check, trigger
    table: str | None
    name: str
    message: str  # plain words: what the database has that the models do not, or the reverse


@dataclass
class DriftReport:
    database: str
    current: str | None
    head: str | None
    drifts: list[Drift] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)  # the messages, in order
    notes: list[str] = field(default_factory=list)  # what could not be compared, and why

    @property
    def clean(self) -> bool:
        return not self.drifts


def check(settings: Settings) -> DriftReport:
    """Compare the models with the live database; an empty report means no drift.

    Reading the catalog waits behind an ACCESS EXCLUSIVE lock on a table (a migration
    running, a forgotten ``LOCK TABLE``): at most MOVIE_MIGRATE_LOCK_TIMEOUT, then the
    error names who holds it.
    """
    from moviectl.core.migrations.timeouts import is_lock_timeout, table_lock_error, to_ms

    target = settings.target()
    engine = make_engine(settings, pooled=False)
    try:
        with db_errors(target, settings.connect_timeout), engine.connect() as conn:
            wait = to_ms(max(settings.migrate_lock_timeout, 0.001))  # 0: do not wait, as migrate
            conn.exec_driver_sql(f"SET lock_timeout = {wait}")
            try:
                drifts, current, notes = _compare(conn)
            except Exception as exc:
                if not is_lock_timeout(exc):
                    raise
                conn.rollback()
                raise table_lock_error(conn, target, settings) from None
            conn.rollback()
    finally:
        engine.dispose()
    return DriftReport(
        database=target.database,
        current=current,
        head=head_revision(),
        drifts=drifts,
        differences=[d.message for d in drifts],
        notes=notes,
    )


def _compare(conn: Any) -> tuple[list[Drift], str | None, list[str]]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from moviectl.core.migrations.project import target_metadata

    metadata = target_metadata()

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and name == "alembic_version")

    ctx = MigrationContext.configure(
        conn,
        opts={"compare_type": True, "compare_server_default": True, "include_object": include},
    )
    compare_defaults_safely(ctx)
    with warnings.catch_warnings():  # SQLAlchemy reflecting a NOT VALID check
        warnings.filterwarnings("ignore", "Can't validate argument 'dialect_options'")
        diffs = compare_metadata(ctx, metadata)
    drifts = _pair_changed([(d, describe(d)) for d in flatten(diffs)])
    missing = {d[1].name for d in flatten(diffs) if d[0] == "add_table"}
    # a missing table is one drift, not one more per index, constraint, CHECK, trigger
    drifts = [d for d in drifts if d.kind == "table" or d.table not in missing]
    current = ctx.get_current_revision()
    raw = conn.connection.dbapi_connection
    notes: list[str] = []
    drifts += compare_checks(raw, metadata, missing, notes)
    drifts += compare_triggers(raw, metadata, missing)
    return drifts, current, notes


_CALL = re.compile(r"\w\s*\(")  # a function call: nextval(, now(, my_audit(


def compare_defaults_safely(ctx: Any) -> None:
    """This migration context (only: no global patch) compares defaults without running any
    function they call (``migrate check`` and ``migrate new``'s autogenerate)."""
    by_running = ctx.impl.compare_server_default

    def compare_default(db_col: Any, model_col: Any, in_models: Any, in_db: Any) -> Any:
        differ = defaults_differ(in_db, in_models)
        return by_running(db_col, model_col, in_models, in_db) if differ is None else differ

    ctx.impl.compare_server_default = compare_default


def defaults_differ(in_db: Any, in_models: Any) -> bool | None:
    """Alembic compares defaults by running them (``SELECT <db> = <models>``): a check would
    advance a sequence (``nextval``) or call any function a default names. Those compare by
    text; None: literals, which Alembic may run."""
    if not (isinstance(in_db, str) and isinstance(in_models, str)):
        return None
    if not (_CALL.search(in_db) or _CALL.search(in_models)):
        return None
    return _norm(in_db.replace("::regclass", "")) != _norm(in_models.replace("::regclass", ""))


def _pair_changed(described: list[tuple[Any, Drift]]) -> list[Drift]:
    """An index or constraint whose name is on both sides changed shape: one drift that says
    how, instead of "the database has X that the models do not" and its contradiction."""
    removed = {(dr.kind, dr.name): diff for diff, dr in described if diff[0].startswith("remove")}
    out: list[Drift] = []
    paired: set[tuple[str, str]] = set()
    for diff, drift in described:
        key = (drift.kind, drift.name)
        if diff[0].startswith("add") and key in removed and drift.kind != "table":
            in_db, in_models = _shape(removed[key][-1]), _shape(diff[-1])
            noun = {"unique": "unique constraint", "foreign_key": "foreign key"}.get(
                drift.kind, drift.kind
            )
            text = f"{noun} {drift.name} differs: the database has {in_db}, the models {in_models}"
            out.append(Drift(drift.kind, drift.table, drift.name, text))
            paired.add(key)
    return out + [d for diff, d in described if (d.kind, d.name) not in paired]


def _shape(obj: Any) -> str:
    """An index or constraint in a few words: ``UNIQUE (title)``, ``(movie_id) → movies.id``."""
    parts = getattr(obj, "expressions", None) or list(getattr(obj, "columns", []))
    cols = ", ".join(str(getattr(p, "name", None) or p) for p in parts)
    unique = "UNIQUE " if getattr(obj, "unique", False) else ""
    target = ", ".join(getattr(e, "target_fullname", "") for e in getattr(obj, "elements", []))
    return f"{unique}({cols})" + (f" → {target}" if target else "")


def flatten(diffs: list[Any]) -> list[Any]:
    out: list[Any] = []
    for d in diffs:
        out.extend(flatten(d) if isinstance(d, list) else [d])
    return out


_ADD_REMOVE = {
    "table": "table",
    "column": "column",
    "index": "index",
    "constraint": "unique constraint",
    "fk": "foreign key",
}


def describe(diff: Any) -> Drift:
    """One Alembic autogenerate difference as a `Drift` in plain words."""
    op, *rest = diff
    verb, _, what = op.partition("_")
    if verb in ("add", "remove") and what in _ADD_REMOVE:
        obj = rest[-1]
        noun = _ADD_REMOVE[what]
        if what == "table":
            table, name = obj.name, obj.name
        elif what == "column":
            table, name = rest[1], f"{rest[1]}.{obj.name}"
        else:
            table = obj.table.name
            name = f"{table}.{obj.name}" if obj.name else f"{table} ({_cols(obj)})"
        kind = {"constraint": "unique", "fk": "foreign_key"}.get(what, what)
        return Drift(kind, table, name, _has(verb == "add", noun, name))
    if verb == "modify" and len(rest) == 6:
        _schema, table, column, _kw, in_db, in_models = rest
        name = f"{table}.{column}"
        kind = what
        if what == "nullable":
            db_says = "allows NULL" if in_db else "is NOT NULL"
            models_say = "allow NULL" if in_models else "say NOT NULL"
            text = f"column {name}: the database {db_says}, the models {models_say}"
        elif what == "type":
            text = f"column {name}: the database has type {in_db}, the models {in_models}"
        elif what == "default":
            text = (
                f"column {name}: the database's default is {_default(in_db)}, "
                f"the models' {_default(in_models)}"
            )
        elif what == "comment":
            text = (
                f"column {name}: the database's comment is {_comment(in_db)}, "
                f"the models' {_comment(in_models)}"
            )
        else:
            text = f"column {name}: {what} differs (database {in_db!r}, models {in_models!r})"
        return Drift(kind, table, name, text)
    if what == "table_comment":  # add: the models have one (or another); remove: they don't
        table = rest[0]
        if verb == "add":
            text = (
                f"table {table.name}: the database's comment is {_comment(rest[1])}, "
                f"the models' {_comment(table.comment)}"
            )
        else:
            text = f"table {table.name}: the database has a comment that the models do not"
        return Drift("comment", table.name, table.name, text)
    names = [
        str(getattr(x, "name", x)) for x in rest if getattr(x, "name", None) or isinstance(x, str)
    ]
    return Drift(
        "other", None, " ".join(names), f"{op.replace('_', ' ')} {' '.join(names)}".strip()
    )


def _has(models_have: bool, noun: str, name: str) -> str:
    a = "an" if noun[0] in "aeio" else "a"  # a unique, a CHECK, an index
    if models_have:
        return f"the models have {a} {noun} {name} that the database does not"
    return f"the database has {a} {noun} {name} that the models do not"


def _cols(constraint: Any) -> str:
    return ", ".join(c.name for c in constraint.columns)


def _comment(value: Any) -> str:
    return "none" if value is None else repr(value)


def _default(value: Any) -> str:
    if value is None:
        return "none"
    if type(value).__name__ == "Identity":  # sqlalchemy.Identity: not a default at all
        return f"GENERATED {'ALWAYS' if value.always else 'BY DEFAULT'} AS IDENTITY"
    arg = getattr(value, "arg", value)  # a model's DefaultClause wraps its expression
    return str(getattr(arg, "text", arg))


def _norm(sql: str) -> str:
    return re.sub(r"\s+", " ", sql.replace("public.", "")).strip().lower()


def compare_checks(
    raw: Any, metadata: Any, missing: set[str | None] | None = None, notes: list[str] | None = None
) -> list[Drift]:
    """CHECK constraints by name, validation and (server-normalised) definition.

    Tables in ``missing`` (reported on their own) are skipped; ``notes`` receives why the
    definitions could not be compared, when the server cannot normalise them.
    """
    from sqlalchemy import CheckConstraint
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]  # untyped in SQLAlchemy
    tables = {t.name: t for t in metadata.sorted_tables if t.name not in (missing or set())}
    live: dict[tuple[str, str], tuple[bool, str]] = {}
    refused: list[str] = []
    rows = raw.execute(
        "SELECT c.relname, k.conname, k.convalidated, pg_get_constraintdef(k.oid) "
        "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid "
        "WHERE k.contype = 'c' AND c.relnamespace = current_schema()::text::regnamespace"
    ).fetchall()
    for table, name, validated, definition in rows:
        if table in tables:
            live[(table, name)] = (validated, definition)
    drifts = []
    for table in tables.values():
        for ck in (c for c in table.constraints if isinstance(c, CheckConstraint)):
            name = f"{table.name}.{ck.name}"
            if (table.name, ck.name) not in live:
                text = _has(True, "CHECK constraint", name)
                drifts.append(Drift("check", table.name, name, text))
                continue
            validated, definition = live.pop((table.name, str(ck.name)))
            if not validated:
                text = (
                    f"CHECK constraint {name} is NOT VALID in the database "
                    f"(ALTER TABLE {table.name} VALIDATE CONSTRAINT {ck.name})"
                )
                drifts.append(Drift("check", table.name, name, text))
            sqltext = str(
                ck.sqltext.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
            )
            wanted = None if refused else _normalised_check(raw, table.name, sqltext, refused)
            if wanted is not None and _norm(wanted) != _norm(definition.replace(" NOT VALID", "")):
                text = (
                    f"CHECK constraint {name} differs: the database has {definition}, "
                    f"the models {wanted}"
                )
                drifts.append(Drift("check", table.name, name, text))
    for (table_name, con), _ in sorted(live.items()):
        name = f"{table_name}.{con}"
        text = _has(False, "CHECK constraint", name)
        drifts.append(Drift("check", table_name, name, text))
    if refused and notes is not None:
        notes.append(
            "CHECK definitions were not compared (names and validation were): the server "
            f"would not create a temporary table to normalise them ({refused[0]})"
        )
    return drifts


_CANNOT_CREATE = {"42501": "no TEMP privilege", "25006": "read-only transaction or hot standby"}


def _normalised_check(
    raw: Any, table: str, sqltext: str, refused: list[str] | None = None
) -> str | None:
    """How the server writes the model's CHECK, on a temporary copy of the table's columns.

    Inside a savepoint that is rolled back; None when the server cannot say (a column the
    database lacks — reported on its own — or, appended to ``refused``, no right to create
    temporary tables here).
    """
    import psycopg
    from psycopg import sql

    try:
        with raw.transaction(force_rollback=True):
            raw.execute(
                sql.SQL("CREATE TEMP TABLE moviectl_drift (LIKE {}) ON COMMIT DROP").format(
                    sql.Identifier(table)
                )
            )
            raw.execute(
                sql.SQL("ALTER TABLE moviectl_drift ADD CONSTRAINT ck CHECK ({})").format(
                    sql.SQL(sqltext)  # the models' own text, from the code, not from a user
                )
            )
            row = raw.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'ck' AND conrelid = 'pg_temp.moviectl_drift'::regclass"
            ).fetchone()
            return str(row[0]) if row else None
    except psycopg.Error as exc:
        why = _CANNOT_CREATE.get(exc.sqlstate or "")
        if why is not None and refused is not None:
            refused.append(why)
        return None


def compare_triggers(
    raw: Any, metadata: Any, missing: set[str | None] | None = None
) -> list[Drift]:
    """Triggers on the models' tables against ``Table.info["triggers"]`` (name: definition)."""
    tables = {t.name: t for t in metadata.sorted_tables if t.name not in (missing or set())}
    rows = raw.execute(
        "SELECT c.relname, t.tgname, t.tgenabled, pg_get_triggerdef(t.oid), "
        "quote_ident(current_schema()) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::text::regnamespace"
    ).fetchall()
    # pg_get_triggerdef always names the table with its schema: not the models' way
    live = {
        (r[0], r[1]): (r[2], r[3].replace(f" ON {r[4]}.", " ON ")) for r in rows if r[0] in tables
    }
    drifts = []
    for table in tables.values():
        for trigger, wanted in table.info.get("triggers", {}).items():
            name = f"{table.name}.{trigger}"
            if (table.name, trigger) not in live:
                text = _has(True, "trigger", name)
                drifts.append(Drift("trigger", table.name, name, text))
                continue
            enabled, definition = live.pop((table.name, trigger))
            if enabled == "D":
                text = f"trigger {name} is disabled in the database"
                drifts.append(Drift("trigger", table.name, name, text))
            body = re.sub(r"^CREATE (CONSTRAINT )?TRIGGER \S+ ", "", definition)
            if _norm(body) != _norm(wanted):
                text = f"trigger {name} differs: the database has {body}, the models {wanted}"
                drifts.append(Drift("trigger", table.name, name, text))
    for (table_name, trigger), _ in sorted(live.items()):
        name = f"{table_name}.{trigger}"
        text = _has(False, "trigger", name)
        drifts.append(Drift("trigger", table_name, name, text))
    return drifts
