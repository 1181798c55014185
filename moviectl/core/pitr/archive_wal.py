"""The ``archive_command``: a POSIX shell script, so any server user runs it.

(The server runs as its own user, which may not be able to run moviectl's Python.)
The rules are the ones an archive needs to never lose a segment:

- the archive directory is never created here: a repository that is gone (an unmounted
  disk, a deleted directory) fails loudly, and PostgreSQL keeps the segment and retries;
- a file of the same name is never replaced: the same bytes succeed (a retry after a
  crash between the copy and PostgreSQL's bookkeeping), different bytes fail;
- the copy is readable by the directory's group (a restore's server reads a Docker
  server's archive that way), written under a temp name, fsynced (``sync FILE``), then
  hard-linked into place (``ln`` refuses an existing name, even in a race) and the
  directory fsynced, before success.
"""

from __future__ import annotations

import os
from pathlib import Path

SCRIPT_NAME = "archive-wal.sh"

SCRIPT = r"""#!/bin/sh
# moviectl archive-wal: archive_command = '/path/archive-wal.sh ARCHIVE_DIR "%p" %f'
set -u
dir=$1 src=$2 name=$3
fail() { echo "moviectl archive-wal: $*" >&2; exit 1; }
case $name in */*|.*|'') fail "refusing WAL file name '$name'";; esac
[ -d "$dir" ] || fail "the WAL archive $dir is unreachable (not a directory)"
final=$dir/$name
if [ -e "$final" ]; then
  cmp -s "$src" "$final" || fail "$final exists with different contents: not overwritten"
  sync "$final" || fail "cannot fsync $final"
  exit 0
fi
tmp=$dir/.$name.$$.tmp
trap 'rm -f "$tmp"' EXIT
cp "$src" "$tmp" || fail "cannot copy $src into $dir"
chmod 0640 "$tmp" || fail "cannot chmod $tmp"
sync "$tmp" || fail "cannot fsync $tmp"
if ! ln "$tmp" "$final" 2>/dev/null; then
  cmp -s "$src" "$final" || fail "$final appeared with different contents"
fi
sync "$dir" || fail "cannot fsync $dir"
"""

_UNSAFE = set("'\"$`\\\n")


def install(path: Path) -> Path:
    """Write the script to ``path`` (0755) unless it is there already, unchanged."""
    if not path.exists() or path.read_text() != SCRIPT:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(SCRIPT)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def command(script: Path, archive_dir: Path) -> str:
    """The ``archive_command`` value for ``script`` archiving into ``archive_dir``."""
    for p in (script, archive_dir):
        if _UNSAFE & set(str(p)):
            from moviectl.infra.errors import ConfigError

            raise ConfigError(
                f"the path {p} has a quote, $, ` or \\ in it: it cannot go in archive_command",
                hint="choose a MOVIE_BACKUP_DIR without those characters",
            )
    return f'"{script}" "{archive_dir}" "%p" %f'
