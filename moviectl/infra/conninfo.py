"""``DbTarget``: the one connection representation that flows everywhere: settings,
engines, raw connections, child tools.

Its displayed form is built from its parts without the password; errors never echo any part
of the input (it may hold a password). The syntax is libpq's (``libpq_syntax``):
``parse_db_url`` accepts what libpq accepts (``postgresql://`` URIs with percent-encoding,
``?password=``, ``?host=/socket/dir``, several ``host:port`` pairs, every libpq keyword;
``key=value`` strings with libpq's quoting).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

from moviectl.infra.errors import ConfigError
from moviectl.infra.libpq_syntax import TLS_MODES, build_url, parse_conninfo, target_fields

__all__ = [
    "APP_NAME",
    "TCP_LIVENESS",
    "DbTarget",
    "SecretUrl",
    "mask_url",
    "parse_db_url",
    "target_from_params",
]
APP_NAME = "moviectl"

# Every connection, moviectl's own and its child tools', notices a dead host or a cut
# network: keepalive probes after 10 s idle (3 x 5 s), and unacknowledged data fails
# after 30 s. A paused server process is caught by infra/watchdog.py instead.
TCP_LIVENESS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def target_from_params(values: dict[str, str], name: str = "URL") -> DbTarget:
    """A ``DbTarget`` from libpq keywords (what ``parse_conninfo`` returns)."""
    return DbTarget(**target_fields(values, name))


@dataclass(frozen=True)
class DbTarget:
    """Connection parameters of one database. ``password`` never shows in repr or URLs.

    ``host`` is libpq's host value: a name, an address, a socket directory (``/…``) or
    several, comma-separated. ``params`` holds every other libpq keyword (sslmode, …).
    """

    host: str
    port: int
    user: str
    password: str | None = field(default=None, repr=False)
    database: str = "postgres"
    params: tuple[tuple[str, str], ...] = ()
    port_spec: str | None = None  # "5432,5433" for several hosts

    def with_database(self, database: str) -> DbTarget:
        return replace(self, database=database)

    @property
    def where(self) -> str:
        """``host:port/database``, for error messages."""
        return f"{self.host or 'local socket'}:{self.port}/{self.database}"

    @property
    def sslmode(self) -> str:
        """The sslmode in force: the URL's, else PGSSLMODE, else libpq's default ``prefer``."""
        return dict(self.params).get("sslmode") or os.environ.get("PGSSLMODE") or "prefer"

    @property
    def wants_tls(self) -> bool:
        return self.sslmode in TLS_MODES

    def url(self, *, masked: bool = True, scheme: str = "postgresql") -> str:
        """The URL; ``masked`` shows ``***`` where the password is (built, not replaced)."""
        return build_url(vars(self), masked=masked, scheme=scheme)

    def libpq_params(self, connect_timeout: int | None = None) -> dict[str, Any]:
        """Keyword arguments for ``psycopg.connect`` (password included: never print this)."""
        kw: dict[str, Any] = dict(self.params)
        kw.update(port=self.port_spec or self.port, user=self.user, dbname=self.database)
        if self.host:
            kw["host"] = self.host
        if self.password:
            kw["password"] = self.password
        kw.setdefault("application_name", APP_NAME)
        kw.setdefault("client_encoding", "UTF8")
        for key, value in TCP_LIVENESS.items():
            kw.setdefault(key, value)
        if connect_timeout is not None:
            kw["connect_timeout"] = connect_timeout
        return kw

    def child_conninfo(self, *, require_tls: bool = False) -> str:
        """The ``-d`` argument for pg_dump/pg_restore/psql/pgcli: the whole connection but
        the password (which travels in ``child_env``), TCP liveness included.

        ``require_tls``: moviectl's own connection is encrypted, so the child's must be too
        (``prefer`` would silently accept a plain one).
        """
        kw = self.libpq_params()
        kw.pop("password", None)
        kw.pop("client_encoding", None)
        if require_tls and not self.wants_tls:
            kw["sslmode"] = "require"
        return " ".join(f"{k}={_conninfo_quote(str(v))}" for k, v in kw.items())

    def child_env(self) -> dict[str, str]:
        """Environment additions for a child tool: the password (never on argv)."""
        return {"PGPASSWORD": self.password} if self.password else {}


def _conninfo_quote(value: str) -> str:
    """A libpq key=value value: single-quoted, with backslash and quote escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_db_url(url: str, name: str = "URL") -> DbTarget:
    """Parse a PostgreSQL URL or key=value string; malformed input is a ``ConfigError``
    (exit 2) that names the problem and never echoes the input."""
    return target_from_params(parse_conninfo(url, name), name)


def mask_url(url: str) -> str:
    """The displayed form of a URL setting: parsed and rebuilt without the password, or,
    when it does not parse, nothing of it (it may hold a password)."""
    try:
        return parse_db_url(url).url(masked=True)
    except ConfigError:
        return "(unparseable: hidden, it may contain a password)"


class SecretUrl(str):
    """A connection URL that holds its password but never shows it: its ``repr`` (what
    pytest prints for a failing test's fixtures, what debuggers and logs show) is masked."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_url(str(self)))

    @property
    def password(self) -> str | None:
        """The password it holds (for masking it wherever its text ends up), or None."""
        try:
            return parse_db_url(str(self)).password or None
        except ConfigError:
            return None


def scrub(text: str, password: str | None, keep: tuple[str, ...] = ()) -> str:
    """``text`` with the password masked; ``keep``: names shown anyway (database, user,
    host) that merely contain it (``movie`` in ``movies``) stay whole, not ``***s``."""
    if not password or len(password) < 3:
        return text
    names = sorted({k for k in keep if k and k != password and password in k}, key=len)[::-1]
    for i, name in enumerate(names):
        text = text.replace(name, f"\0{i}\0")
    text = text.replace(password, "***")
    for i, name in enumerate(names):
        text = text.replace(f"\0{i}\0", name)
    return text


def mask_locations(spec: str) -> str:
    """A repository setting (``MOVIE_BACKUP_REPO``: one or two comma-separated places) as it
    may be printed: a credential put in a URL by mistake (``s3://KEY:SECRET@b``, ``?secret=``)
    is masked; a directory is shown as it is."""
    from urllib.parse import urlsplit

    out = []
    for part in spec.split(","):
        if "://" not in part:
            out.append(part)
            continue
        try:
            u = urlsplit(part)
        except ValueError:
            out.append(part.split("://", 1)[0] + "://***")
            continue
        host = ("***@" if "@" in u.netloc else "") + u.netloc.rsplit("@", 1)[-1]
        out.append(
            f"{u.scheme}://{host}{u.path}"
            + ("?***" if u.query else "")
            + ("#***" if u.fragment else "")
        )
    return ",".join(out)
