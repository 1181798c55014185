"""Alembic environment: the connection comes from moviectl's settings, never from a file.

- A connection handed in as ``config.attributes["connection"]`` (Alembic's "sharing a
  connection" recipe, used by migration-testing tools) is used as it is, and settings are
  not read at all: the migration runs where the caller says, never on the app database.
- Otherwise `moviectl migrate` passes its settings in ``config.attributes["settings"]``,
  and `alembic upgrade head` by hand reads them from MOVIE_* / .env.
Online runs hold moviectl's migration advisory lock, so two migrations never interleave,
and run with lock/statement timeouts, retried after a lock timeout (``timeouts.py``).
"""

from __future__ import annotations

import sys
from logging.config import fileConfig

from alembic import context
from alembic.runtime.migration import MigrationContext

from moviectl.core.migrations.drift import compare_defaults_safely
from moviectl.core.migrations.lock import migration_lock
from moviectl.core.migrations.timeouts import apply_timeouts, run_with_lock_retries
from moviectl.infra.engine import dialect_url, make_engine
from moviectl.infra.errors import MoviectlError
from moviectl.infra.models import metadata
from moviectl.infra.settings import load_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("settings"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


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

    info = connection.connection.dbapi_connection.info
    return DbTarget(info.host, int(info.port), info.user, None, info.dbname)


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


def run_migrations_online() -> None:
    handed = config.attributes.get("connection")
    if handed is not None:  # the caller's connection, the caller's database
        run_on(handed, 10.0, _target_of(handed))
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
