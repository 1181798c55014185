"""Alembic environment: the URL comes from moviectl's settings, never from a file.

Used both by `moviectl migrate` (which passes its settings in ``config.attributes``)
and by `alembic upgrade head` run by hand from the repository root. Online runs
hold moviectl's migration advisory lock, so two concurrent migrations never
interleave.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from alembic.runtime.migration import MigrationContext

from moviectl.core.migrations.lock import migration_lock
from moviectl.infra.engine import dialect_url, make_engine
from moviectl.infra.models import metadata
from moviectl.infra.settings import load_settings

config = context.config
if config.config_file_name is not None and not config.attributes.get("settings"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

settings = config.attributes.get("settings") or load_settings()


def include_object(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
    return not (type_ == "table" and reflected and compare_to is None and name == "alembic_version")


def run_migrations_offline() -> None:
    """`--sql`: emit the SQL without connecting (the URL only picks the dialect)."""
    context.configure(
        url=dialect_url(),
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(settings, pooled=False, application_name="moviectl migrate")
    try:
        with (
            engine.connect() as connection,
            migration_lock(connection, settings.migrate_lock_timeout, settings.target()),
        ):
            # Read inside the lock, so a migration that waited reports what it really did.
            config.attributes["from_revision"] = MigrationContext.configure(
                connection
            ).get_current_revision()
            applied: list[str] = config.attributes.setdefault("applied", [])
            context.configure(
                connection=connection,
                target_metadata=metadata,
                include_object=include_object,
                compare_type=True,
                # each step names the revision it applies (upgrade) or removes (downgrade)
                on_version_apply=lambda step, **_: applied.append(step.up_revision_id),
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
