"""Alembic environment: the connection comes from moviectl's settings, never from a file.

It also runs a service's migrations (a migrations directory with versions/ and no env.py
of its own): the target metadata is the configured one (``core/migrations/project.py``).

- A connection handed in as ``config.attributes["connection"]`` (Alembic's "sharing a
  connection" recipe, pytest-alembic) is used as it is, and settings are not read at all:
  the migration runs where the caller says, never on the app database. It may be
  - an Engine (or anything with ``connect()``): moviectl connects and commits its own work;
  - a Connection outside a transaction: the same, on the caller's connection;
  - a Connection inside the caller's transaction (``with engine.begin() as conn``): the
    migration runs in a savepoint of it and nothing is committed; the caller commits or
    rolls back, and a failed migration leaves the caller's transaction usable.
  It waits at most ``config.attributes["lock_timeout"]`` seconds (default 10) for the
  migration lock.
- Otherwise `moviectl migrate` passes its settings in ``config.attributes["settings"]``,
  and `alembic upgrade head` by hand reads them from MOVIE_* / .env.
Online runs hold moviectl's migration advisory lock, so two migrations never interleave
(in a caller's transaction, a transaction-scoped one: it goes when the caller's
transaction ends), and moviectl's own runs use lock/statement timeouts, retried after a
lock timeout (``timeouts.py``).
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

from alembic import context
from alembic.runtime.migration import MigrationContext

from moviectl.core.migrations.drift import compare_defaults_safely
from moviectl.core.migrations.lock import migration_lock
from moviectl.core.migrations.project import target_metadata
from moviectl.core.migrations.timeouts import apply_timeouts, run_with_lock_retries
from moviectl.infra.engine import dialect_url, make_engine
from moviectl.infra.errors import MoviectlError
from moviectl.infra.settings import load_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("settings"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


# The models autogenerate compares: the caller's, else the service's configured ones
# ([tool.moviectl] metadata / MOVIE_METADATA), else moviectl's own (``project.py``).
metadata = config.attributes.get("target_metadata") or target_metadata()


def _settings():  # type: ignore[no-untyped-def]
    return (config.attributes.get("settings") or load_settings()).session_settings()


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (type_ == "table" and reflected and compare_to is None and name == "alembic_version")


def run_migrations_offline() -> None:
    """`--sql`: emit the SQL without connecting (the URL only picks the dialect)."""
    context.configure(
        url=dialect_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transaction_per_migration=True,  # as the online run commits (and `migrate lint` reads)
    )
    with context.begin_transaction():
        context.run_migrations()


def _target_of(connection):  # type: ignore[no-untyped-def]
    """Where a handed-in connection points, for the lock's messages (no password)."""
    from moviectl.infra.conninfo import DbTarget

    try:  # psycopg 3 knows what libpq connected to
        info = connection.connection.dbapi_connection.info
        return DbTarget(info.host, int(info.port), info.user, None, info.dbname)
    except (AttributeError, TypeError, ValueError):
        url = connection.engine.url
        return DbTarget(url.host or "", url.port or 5432, url.username or "", None, url.database)


def render_item(type_, obj, autogen_context):  # type: ignore[no-untyped-def]
    """Autogenerate: a SQLModel type renders as ``sqlmodel.…``, so import sqlmodel."""
    if type_ == "type" and type(obj).__module__.startswith("sqlmodel"):
        autogen_context.imports.add("import sqlmodel")
    return False  # Alembic renders it as usual


def run_on(connection, lock_timeout: float, target, settings=None) -> None:  # type: ignore[no-untyped-def]
    with migration_lock(connection, lock_timeout, target):
        # Read inside the lock, so a migration that waited reports what it really did.
        config.attributes["from_revision"] = _current(connection)
        applied: list[str] = config.attributes.setdefault("applied", [])
        after: list[str | None] = []  # the revision the database is at once each step commits

        def on_apply(step, **_) -> None:  # type: ignore[no-untyped-def]
            # each step names the revision it applies (upgrade) or removes (downgrade)
            applied.append(step.up_revision_id)
            downs = step.down_revision_ids
            after.append(step.up_revision_id if step.is_upgrade else (downs[0] if downs else None))

        def run() -> None:
            # A fresh context per attempt, configured outside any transaction: each migration
            # runs in its own (an autocommit_block() commits as it goes, and a retry resumes
            # after the last migration that committed).
            _configure(connection, on_apply)
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()

        def forget_rolled_back() -> None:
            """After a rollback: keep only the steps whose revision the database kept."""
            now = _current(connection)
            keep = max((i + 1 for i, rev in enumerate(after) if rev == now), default=0)
            del applied[keep:], after[keep:]

        if settings is None:  # a handed-in connection: the caller's timeouts
            run()
            return
        apply_timeouts(connection, settings)
        run_with_lock_retries(connection, target, settings, run, on_retry=forget_rolled_back)


def _current(connection):  # type: ignore[no-untyped-def]
    """The database's revision, read in a transaction of its own (ended here)."""
    rev = MigrationContext.configure(connection).get_current_revision()
    connection.commit()
    return rev


def _configure(connection, on_apply) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        compare_type=True,
        compare_server_default=True,
        render_item=render_item,
        transaction_per_migration=True,
        on_version_apply=on_apply,
    )
    compare_defaults_safely(context.get_context())  # autogenerate runs no nextval()


def run_in_callers_transaction(connection, lock_timeout: float, target) -> None:  # type: ignore[no-untyped-def]
    """The caller began a transaction: migrate inside a savepoint of it, commit nothing.

    Alembic sees the transaction as external and leaves it alone; the savepoint makes a
    failed migration undo itself (and its lock) without aborting the caller's transaction.
    """
    applied: list[str] = config.attributes.setdefault("applied", [])

    def on_apply(step, **_) -> None:  # type: ignore[no-untyped-def]
        applied.append(step.up_revision_id)

    with connection.begin_nested():
        take_xact_lock(connection, lock_timeout, target)
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["from_revision"] = before
        _configure(connection, on_apply)
        with context.begin_transaction():
            context.run_migrations()


def take_xact_lock(connection, timeout: float, target) -> None:  # type: ignore[no-untyped-def]
    """The migration lock, held until the caller's transaction ends (it is where the
    migration's work becomes visible). The wait is bounded; the caller's own timeouts
    are back as they were afterwards, and a wait that gave up leaves its transaction usable."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    from moviectl.core.migrations.lock import MIGRATION_LOCK_KEY, busy, lock_holders
    from moviectl.core.migrations.timeouts import is_lock_timeout, to_ms

    set_timeouts = text(
        "SELECT set_config('lock_timeout', :l, true), set_config('statement_timeout', :s, true)"
    )
    key = {"k": MIGRATION_LOCK_KEY}
    savepoint = connection.begin_nested()
    try:
        if timeout <= 0:
            got = bool(
                connection.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), key).scalar()
            )
        else:
            # set_config(…, true) is SET LOCAL, which a savepoint's release keeps: restore it
            before = connection.execute(
                text("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
            ).one()
            connection.execute(set_timeouts, {"l": f"{to_ms(timeout)}ms", "s": "0"})
            connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), key)
            connection.execute(set_timeouts, {"l": before[0], "s": before[1]})
            got = True
    except DBAPIError as exc:
        savepoint.rollback()
        if is_lock_timeout(exc):
            raise busy(target, lock_holders(connection)) from None
        raise
    savepoint.commit()  # RELEASE: the lock now belongs to the caller's transaction
    if not got:
        raise busy(target, lock_holders(connection))


HANDED_LOCK_TIMEOUT = 10.0  # seconds a handed-in connection waits for the migration lock


def run_handed(connection) -> None:  # type: ignore[no-untyped-def]
    target = _target_of(connection)
    wait = float(config.attributes.get("lock_timeout", HANDED_LOCK_TIMEOUT))
    if connection.in_transaction():  # the caller's: never commit it
        run_in_callers_transaction(connection, wait, target)
    else:
        run_on(connection, wait, target)


def run_migrations_online() -> None:
    from sqlalchemy.engine import Connection

    handed = config.attributes.get("connection")
    if isinstance(handed, Connection):  # the caller's connection, the caller's database
        run_handed(handed)
        return
    if handed is not None:  # an Engine, or what stands for one (pytest-alembic's wrapper)
        with handed.connect() as connection:
            run_handed(connection)
        return
    settings = _settings()
    engine = make_engine(settings, pooled=False, application_name="moviectl migrate")
    try:
        with engine.connect() as connection:
            run_on(connection, settings.migrate_lock_timeout, settings.target(), settings)
    finally:
        engine.dispose()


def _by_hand() -> bool:
    """`alembic …` at a shell, not moviectl's or a tool's Python call."""
    return "settings" not in config.attributes and "connection" not in config.attributes


try:
    if context.is_offline_mode():
        run_migrations_offline()
    else:
        run_migrations_online()
except MoviectlError as exc:
    if not _by_hand():
        raise
    # the alembic command line would print a traceback: one line and moviectl's code instead
    sys.stderr.write(f"error: {exc.message}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
    sys.exit(int(exc.exit_code))
