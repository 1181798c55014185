"""``MOVIE_DATA_DIR/promoting.json``: a `pitr promote` swapping the embedded cluster.

Written (fsynced) before the old ``pgdata`` is stopped or moved, removed once the promoted
cluster runs. While it exists ``pgdata`` may be missing for a moment (between two renames):
``db up`` then refuses instead of initdb-ing an empty cluster over the gap, and names the
command that finishes the swap (``pitr promote NAME``, which reads this file and resumes).
"""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path
from typing import Any

from moviectl.infra.errors import Refused
from moviectl.infra.files import fsync_dir, read_small, write_json_atomic

JOURNAL = "promoting.json"


def path_of(data_dir: Path) -> Path:
    return data_dir / JOURNAL


# what each key must hold (moviectl writes these; anything else was written by hand)
_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,),
    "timeline": (int,),
    "wal_moved": (int,),
    "aside": (str, type(None)),
    "restored": (str,),  # embedded
    "volume": (str,),  # Docker: the copy is done
    "copying": (str,),  # Docker: the copy may have begun (its snapshot volume)
    "history": (dict,),  # Docker: the restored archive's history files, name -> text
}
_REQUIRED = ("name", "pid", "timeline", "wal_moved", "aside")
_LIMIT = 1 << 20  # a few keys and history files: more is not a journal moviectl wrote
_VOLUME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # Docker's volume names: never a path


def read(data_dir: Path) -> dict[str, Any] | None:
    """The journal, or None when there is none. One moviectl did not write (not JSON, not
    an object, a key missing or of another type, a name no restore can have) is refused,
    exit 5, never guessed at: every command that reads it stops (nothing swapped)."""
    path = path_of(data_dir)
    try:  # a FIFO would block, a symlink lead anywhere: moviectl renames a file in
        data = read_small(path, _LIMIT, follow=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _unreadable(path, _oserror(exc)) from None
    try:
        doc = json.loads(data.decode())
    except ValueError:  # written whole (renamed in): never cut short by moviectl
        raise _unreadable(path, "not JSON") from None
    why = _wrong(doc)
    try:
        why = why or _elsewhere(doc, data_dir)
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a symlink loop
        why = "a path in it is not one"
    if why:
        raise _unreadable(path, why)
    return dict(doc)


def _oserror(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink"
    if exc.errno == errno.EINVAL:
        return "not a regular file"
    return exc.strerror or str(exc)


def _elsewhere(doc: dict[str, Any], data_dir: Path) -> str | None:
    """The paths a promote renames, where moviectl puts them: the restore's ``pgdata`` and
    ``pgdata.before-*`` in the data directory (embedded), volume names (Docker). Any other
    would have a re-run move a directory outside the data directory, or into it."""
    home = data_dir.resolve()
    restored, aside = doc.get("restored"), doc.get("aside")
    if restored is not None:
        want = home / "restores" / doc["name"] / "pgdata"
        if Path(restored).resolve() != want.resolve():
            return f"'restored' is not {want}"
        if aside is not None and not (
            Path(aside).parent.resolve() == home
            and re.fullmatch(r"pgdata\.before-[A-Za-z0-9_.-]+", Path(aside).name)
        ):
            return f"'aside' is not a pgdata.before-* in {home}"
    elif aside is not None and not re.fullmatch(_VOLUME, aside):
        return "'aside' is not a volume's name"
    for key in ("volume", "copying"):
        if key in doc and not re.fullmatch(_VOLUME, doc[key]):
            return f"{key!r} is not a volume's name"
    return None


def _wrong(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return "not an object"
    missing = [k for k in _REQUIRED if k not in doc]
    if missing:
        return f"no {missing[0]!r}"
    name = doc["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", name):
        return "'name' is not a restore's name"
    for key, types in _TYPES.items():
        value = doc.get(key)
        if key in doc and (
            not isinstance(value, types) or (isinstance(value, bool) and bool not in types)
        ):
            return f"{key!r} is not {' or '.join(t.__name__ for t in types)}"
    history = doc.get("history") or {}
    if not all(
        isinstance(k, str) and re.fullmatch(r"[0-9A-F]{8}\.history", k) and isinstance(v, str)
        for k, v in history.items()
    ):
        return "'history' is not history files by name"
    return None


def _unreadable(path: Path, why: str) -> Refused:
    return Refused(
        f"{path} is not a promote journal moviectl wrote ({why}); nothing was done",
        hint="look at it: if no `pitr promote` is unfinished, move it away and re-run; "
        "else put back the journal that promote wrote",
    )


def write(data_dir: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path_of(data_dir), data)


def remove(data_dir: Path) -> None:
    path_of(data_dir).unlink(missing_ok=True)
    fsync_dir(data_dir)


def refuse_if_interrupted(data_dir: Path) -> None:
    """Called under the cluster's start/stop lock, which a running promote holds: a
    journal seen here was left by a promote that was killed."""
    j = read(data_dir)
    if j is None:
        return
    raise Refused(
        f"a `pitr promote {j['name']}` was interrupted (pid {j.get('pid')}); "
        f"{data_dir / 'pgdata'} may be the old cluster, the restored one, or missing",
        hint=f"finish it: moviectl pitr promote {j['name']} --yes "
        f"(the old cluster is kept in {j.get('aside') or 'pgdata'})",
    )
