"""`migrate lint`: the migrations that would lock or break production, before they run.

The range renders to SQL offline (Alembic's ``--sql`` mode, through ``alembic/env.py``)
into a buffer that notes, for every statement written, the migration file and line that
emitted it (the innermost stack frame in the versions directory). PostgreSQL's own parser
(pglast) reads each statement; ``lint_rules.py`` finds the hazards. With a database, each
finding is weighed by its table's live size as ``inspect total-sizes`` reads it
(``core/inspect/sizes.py``: never waiting behind a lock on the table): on an empty table it
is info, on a small one a warning, on a larger one an error; offline (sizes unknown) every
finding is an error.

A finding is acknowledged on purpose by a comment on its line or in the comment lines right
above it: ``# moviectl-lint: allow <rule-id>[, <rule-id>] -- <reason>`` (a reason is required).
"""

from __future__ import annotations

import inspect
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.migrations import scripts
from moviectl.infra.engine import db_errors, make_engine
from moviectl.infra.errors import Unreachable, UsageError
from moviectl.infra.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from moviectl.core.migrations.lint_checks import Hit

TINY_ROWS = 10_000  # up to this many rows (and TINY_BYTES) a lock is brief: a warning
TINY_BYTES = 16 * 1024 * 1024
EXCERPT = 160
ACK = re.compile(r"#\s*moviectl-lint:\s*allow\s+([\w\s,-]*?)\s*(?:--\s*(.*?))?\s*$")


@dataclass
class LintFinding:
    rule: str
    severity: str  # "error" | "warning" | "info"
    revision: str | None
    file: str | None
    line: int | None
    statement: str
    message: str
    table: str | None
    rows: int | None
    bytes: int | None
    weight: str  # why this severity: the table's size, or why size does not matter
    why: str
    fix: str
    acknowledged: bool = False
    reason: str | None = None


@dataclass
class LintReport:
    range: str
    mode: str  # "database" (pending migrations, weighed by size) | "offline"
    database: str | None
    note: str | None
    migrations: list[str] = field(default_factory=list)
    findings: list[LintFinding] = field(default_factory=list)

    __json_extra__ = ("errors", "warnings", "ok")

    def _count(self, severity: str) -> int:
        return sum(1 for f in self.findings if f.severity == severity and not f.acknowledged)

    @property
    def errors(self) -> int:
        return self._count("error")

    @property
    def warnings(self) -> int:
        return self._count("warning")

    @property
    def ok(self) -> bool:
        return self.errors == 0


@dataclass
class Emitted:
    """One write of the offline SQL and the migration line that caused it."""

    text: str
    path: Path | None
    line: int | None
    revision: str | None


class StatementCapture(io.StringIO):
    """Alembic's offline output buffer, noting which migration line wrote each statement."""

    def __init__(self, versions: Path) -> None:
        super().__init__()
        self.versions = versions.resolve()
        self.emitted: list[Emitted] = []
        self._ours: dict[str, Path | None] = {}

    def _in_versions(self, filename: str) -> Path | None:
        if filename not in self._ours:
            path = Path(filename).resolve() if filename.endswith(".py") else None
            self._ours[filename] = path if path and path.parent == self.versions else None
        return self._ours[filename]

    def write(self, text: str) -> int:
        frame = inspect.currentframe()
        found = Emitted(text, None, None, None)
        while frame is not None:
            path = self._in_versions(frame.f_code.co_filename)
            if path is not None:
                found = Emitted(text, path, frame.f_lineno, frame.f_globals.get("revision"))
                break
            frame = frame.f_back
        del frame
        self.emitted.append(found)
        return super().write(text)


def parse_range(text: str) -> tuple[str | None, str]:
    """``A:B`` to (A or None for base, B): the migrations after A up to and including B."""
    start, sep, end = text.partition(":")
    if not sep or ":" in end or not start.strip() or not end.strip():
        raise UsageError(
            f"--range {text!r} is not A:B",
            hint="e.g. --range base:head (all) or --range 0001:head (the ones after 0001)",
        )
    directory = scripts.script_directory()
    first = scripts.resolve_revision(directory, start.strip())
    last = scripts.resolve_revision(directory, end.strip())
    if last is None:
        raise UsageError(f"--range {text!r} ends at base: nothing to lint", hint="end at head")
    ancestors = {r.revision for r in directory.iterate_revisions(last, "base")}
    if first is not None and first not in ancestors:
        raise UsageError(
            f"--range {text!r}: {first} is not before {last}",
            hint="the first revision is the one already applied, e.g. base:head",
        )
    return first, last


def render(settings: Settings, start: str | None, end: str) -> list[Emitted]:
    """The offline SQL of the migrations after ``start`` up to ``end``, write by write."""
    from alembic import command

    capture = StatementCapture(scripts.versions_location())
    cfg = scripts.alembic_config(settings)
    cfg.output_buffer = capture
    command.upgrade(cfg, f"{start or 'base'}:{end}", sql=True)
    return capture.emitted


class Database:
    """What the live database knows: table sizes, function volatility, validated checks."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._volatile: dict[str, bool] = {}
        self.locked: set[str] = set()  # tables someone holds ACCESS EXCLUSIVE on right now

    def _one(self, sql: str, **params: Any) -> Any:
        from sqlalchemy import text

        with self.conn.begin():
            return self.conn.execute(text(sql), params).first()

    def volatile(self, name: str) -> bool:
        from moviectl.core.migrations.lint_rules import VOLATILE_FUNCTIONS

        if name not in self._volatile:
            row = self._one(
                "SELECT bool_or(provolatile = 'v') FROM pg_proc WHERE proname = :n", n=name
            )
            self._volatile[name] = name in VOLATILE_FUNCTIONS or bool(row and row[0])
        return self._volatile[name]

    def validated_not_null(self, table: str, column: str) -> bool:
        rows = self._one(
            "SELECT array_agg(pg_get_constraintdef(oid)) FROM pg_constraint "
            "WHERE conrelid = to_regclass(:t) AND contype = 'c' AND convalidated",
            t=quoted(table),
        )
        wanted = f"check{column.lower()}isnotnull"
        return any(re.sub(r'[\s()"]', "", d).lower() == wanted for d in (rows[0] or []))

    def size(self, table: str) -> tuple[int | None, int | None]:
        """(rows, bytes) of ``table`` as ``inspect total-sizes`` reads them, never waiting
        behind a lock on it; rows counted exactly up to TINY_ROWS + 1."""
        from sqlalchemy import text

        from moviectl.core.inspect.sizes import live_size

        name = quoted(table)
        with self.conn.begin():  # bounded: lint never queues behind the locks it weighs
            self.conn.execute(text("SET LOCAL lock_timeout = '1s'"))
            self.conn.execute(text("SET LOCAL statement_timeout = '5s'"))
            live = live_size(self.conn.connection.driver_connection, name)
        if live is None:
            return None, None
        if live.locked:
            self.locked.add(table)
        if live.est_rows > TINY_ROWS:
            return live.est_rows, live.bytes
        try:  # never analysed (-1) or small: count, but never wait behind a lock
            with self.conn.begin():
                self.conn.execute(text("SET LOCAL lock_timeout = '1s'"))
                self.conn.execute(text("SET LOCAL statement_timeout = '5s'"))
                counted = self.conn.execute(
                    text(f"SELECT count(*) FROM (SELECT 1 FROM {name} LIMIT {TINY_ROWS + 1}) s")
                ).scalar_one()
        except Exception:
            return (live.est_rows if live.est_rows >= 0 else None), live.bytes
        return int(counted), live.bytes


def quoted(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))


def acknowledgement(lines: list[str], line: int, rule: str) -> tuple[bool, str | None, str]:
    """(acknowledged, reason, note) from ``# moviectl-lint: allow`` on/above ``line``."""
    index = line - 1
    candidates = [lines[index]] if 0 <= index < len(lines) else []
    above = index - 1
    while 0 <= above < len(lines) and lines[above].strip().startswith("#"):
        candidates.append(lines[above])
        above -= 1
    for text in candidates:
        match = ACK.search(text)
        if match and rule in {r.strip() for r in match.group(1).split(",")}:
            if match.group(2):
                return True, match.group(2), ""
            return False, None, " (its allow comment is ignored: it needs `-- <reason>`)"
    return False, None, ""


def _weigh(rule_weighed: bool, rows: int | None, size: int | None, online: bool) -> tuple[str, str]:
    if not rule_weighed:
        return "error", "not weighed"
    if not online:
        return "error", "size unknown (offline)"
    if rows is None and size is not None:  # never analysed, and locked: not counted
        return "error", "row count unknown (the table is locked now)"
    if rows is None:
        return "error", "size unknown (not in the database)"
    if rows == 0:
        return "info", "empty table"
    if rows <= TINY_ROWS and (size or 0) <= TINY_BYTES:
        return "warning", "small table"
    return "error", "large table"


def lint(settings: Settings, range_: str | None = None) -> LintReport:
    """Lint ``range_`` (``A:B``) offline, or by default the pending migrations, weighed."""
    if range_ is not None:
        start, end = parse_range(range_)
        report = LintReport(f"{start or 'base'}:{end}", "offline", None, None)
        return _lint(settings, report, start, end, None)
    from moviectl.core.migrations.status import status as migration_status

    try:
        status = migration_status(settings)
    except Unreachable as exc:  # a wrong password or missing database stays an error
        head = scripts.script_directory().get_current_head() or "head"
        note = (
            f"no database ({exc.message}): linted base:{head} offline, where every table is "
            "new; for what a deploy runs: --range <production's revision>:head"
        )
        return _lint(settings, LintReport(f"base:{head}", "offline", None, note), None, head, None)
    target = settings.target()
    span = f"{status.current or 'base'}:{status.head}"
    report = LintReport(span, "database", target.database, None)
    if status.up_to_date or status.head is None:
        report.note = f"no pending migrations ({target.database} is at {status.current})"
        return report
    engine = make_engine(settings, pooled=False, application_name="moviectl migrate lint")
    try:
        with db_errors(target, settings.connect_timeout), engine.connect() as conn:
            return _lint(settings, report, status.current, status.head, Database(conn))
    finally:
        engine.dispose()


def _lint(
    settings: Settings, report: LintReport, start: str | None, end: str, db: Database | None
) -> LintReport:
    from pglast.parser import ParseError, parse_sql

    from moviectl.core.migrations.lint_checks import Hit, State, analyse
    from moviectl.core.migrations.lint_rules import RULES

    state = (
        State()
        if db is None
        else State(volatile=db.volatile, validated_not_null=db.validated_not_null)
    )
    for emitted in render(settings, start, end):
        if emitted.revision and emitted.revision not in report.migrations:
            report.migrations.append(emitted.revision)
        try:
            statements = parse_sql(emitted.text)
        except ParseError as exc:
            hits = [(Hit("syntax-error", None, f"PostgreSQL's parser: {exc}"), emitted.text)]
        else:
            hits = [
                (hit, _excerpt(emitted.text, raw))
                for raw in statements
                for hit in analyse(raw.stmt, state)
            ]
        if emitted.path is None:
            continue  # Alembic's own bookkeeping (BEGIN, alembic_version)
        for hit, sql in hits:
            report.findings.append(_finding(hit, sql, emitted, RULES[hit.rule], db))
    return report


def _excerpt(text: str, raw: Any) -> str:
    end = raw.stmt_location + raw.stmt_len if raw.stmt_len else len(text)
    return text[raw.stmt_location : end]


def _finding(hit: Hit, sql: str, emitted: Emitted, rule: Any, db: Database | None) -> LintFinding:
    rows, size = (
        db.size(hit.table) if db is not None and hit.table and rule.weighed else (None, None)
    )
    severity, weight = _weigh(rule.weighed, rows, size, db is not None)
    assert emitted.path is not None and emitted.line is not None
    lines = emitted.path.read_text().splitlines()
    acknowledged, reason, note = acknowledgement(lines, emitted.line, hit.rule)
    if db is not None and hit.table in db.locked:
        note += (
            f" ({hit.table} is under an ACCESS EXCLUSIVE lock right now: this statement would"
            " queue behind it, and every query on the table behind this statement)"
        )
    statement = " ".join(sql.split()).rstrip(";")
    return LintFinding(
        rule=hit.rule,
        severity=severity,
        revision=emitted.revision,
        file=_shown(emitted.path),
        line=emitted.line,
        statement=statement if len(statement) <= EXCERPT else statement[: EXCERPT - 1] + "…",
        message=hit.detail + note,
        table=hit.table,
        rows=rows,
        bytes=size,
        weight=weight,
        why=rule.why,
        fix=rule.fix,
        acknowledged=acknowledged,
        reason=reason,
    )


def _shown(path: Path) -> str:
    """The file as a person finds it: relative to the working directory when under it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
