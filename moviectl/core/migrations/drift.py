"""`migrate check`: compare the models with the live database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moviectl.core.migrations.scripts import script_directory
from moviectl.infra.engine import db_errors, make_engine
from moviectl.infra.settings import Settings


@dataclass
class DriftReport:
    database: str
    current: str | None
    head: str | None
    differences: list[str]

    @property
    def clean(self) -> bool:
        return not self.differences


def check(settings: Settings) -> DriftReport:
    """Compare the models with the live database (autogenerate); empty list = no drift."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from moviectl.infra.models import metadata

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (type_ == "table" and name == "alembic_version")

    target = settings.target()
    engine = make_engine(settings, pooled=False)
    try:
        with db_errors(target, settings.connect_timeout), engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            diffs = compare_metadata(ctx, metadata)
            current = ctx.get_current_revision()
    finally:
        engine.dispose()
    return DriftReport(
        database=target.database,
        current=current,
        head=script_directory().get_current_head(),
        differences=[describe_difference(d) for d in diffs],
    )


def describe_difference(diff: Any) -> str:
    if isinstance(diff, list):  # column modifications come grouped
        return "; ".join(describe_difference(d) for d in diff)
    kind, *rest = diff
    names = []
    for item in rest:
        name = getattr(item, "name", None)
        if name is not None:
            names.append(str(name))
        elif isinstance(item, str):
            names.append(item)
    return f"{kind} {' '.join(names)}".strip()
