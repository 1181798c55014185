"""The migration scripts: where they are, their revisions, their head (cheaply).

Whose scripts: the service's when configured, else the ones moviectl ships
(``project.py``). ``head_revision`` reads the
scripts without importing Alembic, for hot paths (health, seed).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.core.migrations.project import schema_source
from moviectl.infra.errors import UnknownRevision

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from moviectl.infra.settings import Settings


def script_location() -> Path:
    """The directory holding env.py (the service's, else moviectl's: ``project.py``)."""
    return schema_source().scripts


def versions_location() -> Path:
    """The directory holding the migration scripts (the service's when configured)."""
    return schema_source().versions


def alembic_config(settings: Settings) -> Config:
    from argparse import Namespace

    from alembic.config import Config

    source = schema_source()
    # quiet: Alembic's own "Generating …" lines would corrupt --json's stdout
    cfg = Config(cmd_opts=Namespace(quiet=True))
    cfg.set_main_option("script_location", str(source.scripts).replace("%", "%%"))
    if source.versions != source.scripts / "versions":
        # os.pathsep-separated (a path may hold spaces); both names: Alembic 1.14 and 1.16+
        cfg.set_main_option("path_separator", "os")
        cfg.set_main_option("version_path_separator", "os")
        cfg.set_main_option("version_locations", str(source.versions).replace("%", "%%"))
    cfg.attributes["settings"] = settings
    return cfg


def script_directory() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    source = schema_source()
    return ScriptDirectory(str(source.scripts), version_locations=[str(source.versions)])


_REV_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*(.+)$", re.MULTILINE)


def script_revisions(versions: Path | None = None) -> dict[str, Any] | None:
    """Every script's ``revision -> down_revision`` (None, an id, or a tuple for a merge),
    read from the files without importing Alembic (hot paths: health, metrics, seed).

    None when a script does not spell its revision as a plain literal: ask Alembic then.
    """
    found: dict[str, Any] = {}
    for path in (versions or versions_location()).glob("*.py"):
        fields = dict(_REV_LINE.findall(path.read_text()))
        try:
            rev = ast.literal_eval(fields["revision"].strip())
            down = ast.literal_eval(fields.get("down_revision", "None").strip())
        except (KeyError, ValueError, SyntaxError):
            return None
        if not isinstance(rev, str):
            return None
        found[rev] = down
    return found


def head_revision() -> str | None:
    """The head revision, read from the scripts without importing Alembic (hot paths).

    Falls back to Alembic's own answer when the scripts are not a single linear chain.
    """
    revisions = script_revisions()
    if revisions is None or not all(isinstance(d, str | None) for d in revisions.values()):
        return script_directory().get_current_head()
    heads = set(revisions) - set(revisions.values())
    return heads.pop() if len(heads) == 1 else script_directory().get_current_head()


def scripts_fingerprint() -> str:
    """sha256 of every migration script's content (names test-database templates)."""
    import hashlib

    digest = hashlib.sha256()
    source = schema_source()
    for path in [*sorted(source.versions.glob("*.py")), source.scripts / "env.py"]:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@dataclass
class Revision:
    revision: str
    down_revision: str | None
    message: str
    is_head: bool = False
    is_current: bool = False


def revision_of(script: Any, current: str | None = None, head: str | None = None) -> Revision:
    return Revision(
        revision=script.revision,
        down_revision=script.down_revision
        if isinstance(script.down_revision, str | None)
        else ",".join(script.down_revision),
        message=(script.doc or "").splitlines()[0] if script.doc else "",
        is_head=script.revision == head,
        is_current=script.revision == current,
    )


def resolve_revision(scripts: ScriptDirectory, rev: str) -> str | None:
    """A revision name (``head``, ``base``, id, prefix) to its id; unknown ones are usage errors."""
    from alembic.script.revision import CycleDetected
    from alembic.util import CommandError

    if not rev.strip():
        raise UnknownRevision(
            "the revision is empty", hint="head, base, or an id from `moviectl migrate history`"
        )
    if rev == "base":
        return None
    try:
        found = scripts.get_revision(rev)
    except CommandError as exc:
        if isinstance(exc.__cause__ or exc.__context__, CycleDetected):
            raise  # the scripts' history itself is broken: the one handler says so
        raise UnknownRevision(f"unknown revision {rev!r}: {exc}") from None
    if found is None:
        raise UnknownRevision(f"unknown revision {rev!r}")
    return found.revision
