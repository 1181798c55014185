"""pgAdmin's private directory: its configuration, the app's server and the pgpass file.

Everything lives in ``MOVIE_DATA_DIR/pgadmin`` (0700): pgAdmin's own data (SQLite, sessions,
storage), its log, ``servers.json`` and ``pgpass`` (0600, the only file that holds the
password). pgAdmin is configured by a file of ours (``CONFIG_DISTRO_FILE_PATH``, which its
``config.py`` reads), never by editing its installation.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from moviectl.infra.conninfo import DbTarget
from moviectl.infra.files import write_atomically
from moviectl.infra.settings import Settings

SERVER_GROUP = "moviectl"
# the Host headers pgAdmin answers (its ALLOWED_HOSTS; any other gets 403)
ALLOWED_HOSTS = ("127.0.0.1", "localhost")
# libpq keywords pgAdmin takes as a server's connection parameters (the TLS ones)
_PARAMS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "sslcrl", "sslcompression")


@dataclass(frozen=True)
class AdminFiles:
    """The paths of one project's pgAdmin."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def config(self) -> Path:
        return self.root / "config_moviectl.py"

    @property
    def servers(self) -> Path:
        return self.root / "servers.json"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def state(self) -> Path:
        return self.root / "pgadmin.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def log(self) -> Path:
        return self.root / "pgadmin4.log"

    @property
    def output(self) -> Path:
        return self.root / "pgadmin4.out"

    @property
    def sqlite(self) -> Path:
        return self.data / "pgadmin4.db"


def admin_files(settings: Settings, *, create: bool = True) -> AdminFiles:
    """The project's pgAdmin directory, created 0700 (and made 0700 if it was not)."""
    root = settings.data_dir / "pgadmin"
    if create:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
    return AdminFiles(root)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new 0600 file, then rename it over ``path`` (never a moment
    world-readable, never half-written)."""
    write_atomically(path, text.encode(), 0o600)  # the one atomic writer


def _pgpass_field(value: str) -> str:
    """A pgpass field: ``\\`` and ``:`` escaped, as libpq reads them."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_text(target: DbTarget) -> str:
    """One line per host (any database: pgAdmin browses the server's other databases)."""
    password = target.password or ""
    hosts = [h for h in target.host.split(",") if h] or ["localhost"]
    lines = []
    for host in hosts:
        host = "localhost" if host.startswith("/") else host  # libpq's name for a socket
        fields = [host, str(target.port_spec or target.port), "*", target.user, password]
        lines.append(":".join(_pgpass_field(f) for f in fields))
    return "\n".join(lines) + "\n"


def server_name(target: DbTarget) -> str:
    return f"{target.database} (moviectl)"


def servers_json(target: DbTarget, pgpass: Path, connect_timeout: int) -> str:
    """pgAdmin's servers.json for the app's server: no password, the pgpass file instead."""
    params: dict[str, object] = {k: v for k, v in target.params if k in _PARAMS}
    params.setdefault("sslmode", target.sslmode)
    params["passfile"] = str(pgpass)
    params["connect_timeout"] = connect_timeout
    server = {
        "Name": server_name(target),
        "Group": SERVER_GROUP,
        "Host": target.host or "localhost",
        "Port": target.port,
        "MaintenanceDB": target.database,
        "Username": target.user,
        "ConnectionParameters": params,
    }
    return json.dumps({"Servers": {"1": server}}, indent=2, sort_keys=True) + "\n"


def config_text(files: AdminFiles, port: int) -> str:
    """pgAdmin's configuration: desktop mode (no login), 127.0.0.1 only, our directories,
    no master password, no OS keyring, no update check, warnings and errors only in its
    logs (its debug level would log the access key).

    ``ALLOWED_HOSTS`` is pgAdmin's Host-header check, the guard against DNS rebinding (a
    page on evil.example that resolves to 127.0.0.1 sends ``Host: evil.example``: 403).
    ``localhost`` is allowed besides the printed 127.0.0.1: people type it, and no other
    site can have that name in a browser."""
    data = files.data
    values = {
        "SERVER_MODE": False,
        "DEFAULT_SERVER": "127.0.0.1",
        "DEFAULT_SERVER_PORT": port,
        "DATA_DIR": str(data),
        "SQLITE_PATH": str(files.sqlite),
        "SESSION_DB_PATH": str(data / "sessions"),
        "STORAGE_DIR": str(data / "storage"),
        "AZURE_CREDENTIAL_CACHE_DIR": str(data / "azurecredentialcache"),
        "KERBEROS_CCACHE_DIR": str(data / "krbccache"),
        "LOG_FILE": str(files.log),
        "CONSOLE_LOG_LEVEL": 30,  # logging.WARNING
        "FILE_LOG_LEVEL": 30,
        "MASTER_PASSWORD_REQUIRED": False,
        "USE_OS_SECRET_STORAGE": False,
        "UPGRADE_CHECK_ENABLED": False,
        "ALLOWED_HOSTS": list(ALLOWED_HOSTS),
    }
    lines = ["# Written by moviectl (`moviectl db admin`) on every start: edits are lost."]
    lines += [f"{k} = {v!r}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def digest(*texts: str) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()
