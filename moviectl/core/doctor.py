"""`moviectl doctor`: the operator's machine and config, checked before anything breaks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moviectl.core.pitr import status as pitr_status
from moviectl.infra.errors import MoviectlError
from moviectl.infra.settings import Settings
from moviectl.infra.settings_report import unknown_env_keys

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass
class Finding:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class DoctorReport:
    findings: list[Finding]

    @property
    def ok(self) -> bool:
        """Nothing failed and nothing warned (the exit-code table: 1 when a check warned)."""
        return all(f.status == OK for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.status == WARN for f in self.findings)

    @property
    def failures(self) -> int:
        return sum(f.status == FAIL for f in self.findings)

    __json_extra__ = ("ok", "warnings", "failures")


def run(settings: Settings, env_file: str | Path | None = None) -> DoctorReport:
    findings = [
        _docker(settings),
        _embedded(settings),
        _env_keys(env_file),
        _pgcli(settings),
    ]
    if (upgrade := _upgrade(settings)) is not None:
        findings.append(upgrade)
    server_major, server = _server(settings)
    findings.append(server)
    if server.status != OK:
        findings.append(_port(settings))
    findings.extend(_compose(settings))
    findings.append(_pg_dump(settings, server_major))
    if server_major is not None:
        findings.append(_createdb(settings))
        findings.append(_leftovers(settings))
        findings.append(Finding(*pitr_status.doctor_finding(settings)))  # WAL archive
    else:  # a killed `pitr promote` is why the server is down: the step that finishes it
        for w in pitr_status.interrupted_promote(settings):
            findings.append(Finding("pitr promote", WARN, w, "moviectl pitr status"))
    if settings.backup_repo and "://" in settings.backup_repo:
        findings.append(_uploads(settings))
    return DoctorReport(findings)


def _uploads(settings: Settings) -> Finding:
    """Unfinished multipart uploads left behind in MOVIE_BACKUP_REPO's buckets, counted as
    ``health`` counts them (a running backup's are not a warning) and within its bound:
    every bucket side by side, twice MOVIE_CONNECT_TIMEOUT, a stalled one "not checked"."""
    import time

    from moviectl.core.backups import uploads
    from moviectl.core.health.repositories import ago, read_repositories

    facts = read_repositories(settings, manifests=False)
    if bad := [f for f in facts if f.error]:  # a malformed MOVIE_BACKUP_REPO
        return Finding("leftover uploads", WARN, f"could not look: {bad[0].error}")
    buckets = [f for f in facts if f.incomplete_uploads is not None or f.uploads_unchecked]
    unchecked = [f"{f.repository}: {f.uploads_unchecked}" for f in buckets if f.uploads_unchecked]
    now, left, fixes, flying = time.time(), [], [], 0
    for f in buckets:
        n, mine = f.leftover_uploads or 0, f.abortable_uploads or 0
        flying += (f.incomplete_uploads or 0) - n
        if not n:
            continue
        left.append(
            f"{n} unfinished multipart upload(s) left behind in {f.repository}, the oldest "
            f"began {ago(f.oldest_leftover_upload, now)} ({mine} for `backup prune` to abort)"
        )
        if mine:
            fixes.append(f"moviectl backup prune --uploads-only --repo {f.repository}")
        if mine < n:
            fixes.append(f"`moviectl backup list --repo {f.repository}` says why the others stay")
    if not left and not unchecked:
        running = f" ({flying} of running backups or too young to judge)" if flying else ""
        where = ", ".join(f.repository for f in buckets)
        return Finding("leftover uploads", OK, f"none left behind in {where}{running}")
    fix = "; ".join([*fixes, uploads.LIFECYCLE])
    return Finding("leftover uploads", WARN, "; ".join(left + unchecked), fix=fix if left else "")


def _leftovers(settings: Settings) -> Finding:
    """Temp files and half-loaded databases of killed backups, restores and drills."""
    from moviectl.core.backups.leftovers import find_leftovers

    try:
        found = find_leftovers(settings)
    except MoviectlError as exc:
        return Finding("leftovers", WARN, f"could not look: {exc.message}")
    if found.empty:
        return Finding("leftovers", OK, "no leftovers of interrupted backups or restores")
    what = [*found.partial_files, *(f"database {d}" for d in found.databases)]
    return Finding(
        "leftovers",
        WARN,
        "left by interrupted runs: " + ", ".join(what),
        fix="the next `moviectl backup` / `restore` / `backup verify` removes them",
    )


def _docker(settings: Settings) -> Finding:
    from moviectl.core.servers.docker_engine import engine_answers

    if engine_answers():
        return Finding("docker", OK, "a Docker engine answers")
    status = FAIL if settings.db_backend == "docker" else WARN
    return Finding(
        "docker",
        status,
        "no Docker engine answers"
        + ("" if status == FAIL else "; `auto` will use the embedded server"),
        "start Docker, or set MOVIE_DB_BACKEND=embedded",
    )


def _compose(settings: Settings) -> list[Finding]:
    """The compose file by hand (its password file) and the db container's state."""
    from moviectl.core.servers import resolve_auto
    from moviectl.core.servers.compose import compose_path, db_service
    from moviectl.core.servers.docker_engine import by_hand_env, engine_answers, password_file

    try:  # only where Docker is (or `auto` would make it) this project's server
        backend = resolve_auto(settings) if settings.db_backend == "auto" else settings.db_backend
    except MoviectlError:
        backend = "docker"  # data under both: the Docker side is worth a look
    if not backend.startswith("docker"):
        return []
    path = compose_path(Path(settings.compose_file))
    try:
        svc = db_service(path, by_hand_env(path), settings.compose_project)
    except MoviectlError as exc:
        return [Finding("compose", WARN, exc.message, exc.hint or "")]
    own = password_file(settings)
    found = [_compose_secret(settings, svc.secrets.get("postgres-password"), own)]
    if engine_answers():
        found.append(_container(settings))
        found.append(_volume(settings, svc.volume_target))
    return found


def _volume(settings: Settings, by_hand_mount: str) -> Finding:
    """Which layout (and major) the data volume has, against the image and the mount."""
    from moviectl.core.servers.docker import DockerBackend
    from moviectl.core.servers.volume_layout import (
        MOUNT_VARIABLE,
        data_mount,
        image_major,
        read_layout,
    )

    try:
        backend = DockerBackend(settings)
        name, image = backend.svc.volume_name, backend.svc.image
        if not name or backend.data_resource() is None or not backend.image_present():
            return Finding("volume", OK, "no data volume yet (or its image is not here)")
        found = read_layout(backend.client, name, image)
    except Exception as exc:  # the engine or the image let us down: a warning, not a crash
        return Finding("volume", WARN, f"cannot read the data volume's layout: {exc}")
    if not found.fits(image):
        return Finding(
            "volume",
            FAIL,
            f"{found.describe()}; the image {image} is PostgreSQL {image_major(image)}",
            f"moviectl db upgrade --to {image_major(image)} --dry-run (then without --dry-run),"
            f" or MOVIE_DB_IMAGE back to a PostgreSQL {found.major} image",
        )
    if by_hand_mount != data_mount(image):
        return Finding(
            "volume",
            WARN,
            f"{found.describe()}; by hand, Compose mounts it at {by_hand_mount}",
            f"export {MOUNT_VARIABLE}={data_mount(image)} before `docker compose up`",
        )
    return Finding("volume", OK, found.describe())


def _compose_secret(settings: Settings, secret: Path | None, own: Path) -> Finding:
    name = "compose"
    export = f"export MOVIE_DB_PASSWORD_FILE={own} (moviectl writes it on `db up`)"
    if secret is None:
        return Finding(name, OK, "the compose file's db service reads no password file")
    try:
        held = secret.read_bytes().rstrip(b"\r\n")  # the image's entrypoint strips those
    except FileNotFoundError:
        return Finding(
            name,
            WARN,
            f"`docker compose up -d db` by hand fails: its password file {secret} is missing "
            "(Compose v1 then leaves a recreated database stopped)",
            f"{export}, or restore the shipped compose/postgres-password.default",
        )
    except OSError as exc:
        return Finding(name, WARN, f"cannot read {secret}: {exc.strerror or exc}")
    if held != (settings.target().password or "").encode():
        return Finding(
            name,
            WARN,
            f"by hand, Compose reads {secret}, which holds another password than "
            "MOVIE_DB_PASSWORD: a volume it initialises would not let moviectl in "
            "(an existing volume keeps its password)",
            export,
        )
    return Finding(name, OK, f"by hand, Compose reads the password from {secret}, as set")


def _container(settings: Settings) -> Finding:
    from moviectl.core.servers.docker import DockerBackend

    try:
        backend = DockerBackend(settings)
        c = backend.container()
    except MoviectlError as exc:
        return Finding("container", WARN, exc.message, exc.hint or "")
    if c is None:
        return Finding("container", OK, f"no db container for project {backend.svc.project}")
    if c.status == "running":
        return Finding("container", OK, f"container {c.name} is running")
    state = c.attrs.get("State") or {}
    aside = c.name != backend.svc.container_name
    return Finding(
        "container",
        WARN,
        f"container {c.name} is {c.status} (exit code {state.get('ExitCode', '?')})"
        + ("; a failed recreate renamed it aside (Compose v1 does)" if aside else ""),
        "`moviectl db up` starts it again (the data volume is kept)",
    )


def _embedded(settings: Settings) -> Finding:
    from moviectl.infra.pgtools import binary_major, find_bin_dir

    try:
        bin_dir = find_bin_dir(settings.pg_bin_dir)
        major = binary_major(bin_dir)
    except (MoviectlError, OSError) as exc:
        return Finding("embedded", FAIL, str(exc), "reinstall moviectl (uv sync)")
    return Finding("embedded", OK, f"PostgreSQL {major} binaries in {bin_dir} run")


def _upgrade(settings: Settings) -> Finding | None:
    """A major upgrade, unfinished or interrupted (`db upgrade`), of either backend."""
    from moviectl.core.servers import docker_upgrade, upgrade_state

    try:
        found = upgrade_state.pending(settings.data_dir) or docker_upgrade.pending(
            settings.data_dir
        )
    except MoviectlError as exc:  # a state file moviectl did not write: said, not skipped
        return Finding("upgrade", FAIL, str(exc), exc.hint or "")
    return Finding("upgrade", WARN, *found) if found else None


def _env_keys(env_file: str | Path | None) -> Finding:
    unknown = unknown_env_keys(env_file)
    if not unknown:
        return Finding(".env", OK, "no unknown MOVIE_* keys")
    return Finding(
        ".env",
        WARN,
        f"keys no setting reads (typos?): {', '.join(unknown)}",
        "compare with .env.example / `moviectl config show`",
    )


def _pgcli(settings: Settings) -> Finding:
    from moviectl.core.shell import find_client

    try:
        path = find_client(settings, psql=False)
    except MoviectlError:
        return Finding(
            "pgcli", WARN, "pgcli not found", "uv sync, or use `moviectl db shell --psql`"
        )
    return Finding("pgcli", OK, f"pgcli is installed at {path} (`moviectl db shell`)")


def _server(settings: Settings) -> tuple[int | None, Finding]:
    from moviectl.infra.engine import connect
    from moviectl.infra.server_facts import server_major

    t = settings.target()
    try:
        with connect(t, connect_timeout=settings.connect_timeout) as c:
            major = server_major(c)
    except MoviectlError as exc:
        return None, Finding("server", WARN, exc.message, exc.hint or "")
    return major, Finding("server", OK, f"PostgreSQL {major} at {t.where}")


def _port(settings: Settings) -> Finding:
    from moviectl.infra.ports import port_is_free, port_owner

    t = settings.target()
    if t.host not in ("127.0.0.1", "localhost"):
        return Finding("port", OK, f"{t.host} is remote; nothing to check locally")
    if port_is_free("127.0.0.1", t.port):
        return Finding("port", OK, f"port {t.port} is free for `moviectl db up`")
    owner = port_owner(t.port) or "another process"
    return Finding(
        "port",
        FAIL,
        f"port {t.port} is in use by {owner}, and it is not our database",
        "stop it, or choose another port with MOVIE_DB_PORT",
    )


def _pg_dump(settings: Settings, server_major: int | None) -> Finding:
    from moviectl.infra.pgtools import find_tool

    try:
        tool = find_tool("pg_dump", settings, server_major)
    except MoviectlError as exc:
        return Finding("pg_dump", FAIL if server_major else WARN, exc.message, exc.hint or "")
    vs = f" (server {server_major})" if server_major else ""
    return Finding("pg_dump", OK, f"{tool.path} is {tool.version}{vs}")


def _createdb(settings: Settings) -> Finding:
    from moviectl.infra.admin import admin_target
    from moviectl.infra.engine import connect

    t = admin_target(settings)
    try:
        with connect(t, connect_timeout=settings.connect_timeout) as c:
            row = c.execute(
                "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except MoviectlError as exc:
        return Finding("createdb", WARN, exc.message, exc.hint or "")
    if row and row[0]:
        return Finding("createdb", OK, f"{t.user} may create test databases")
    return Finding(
        "createdb",
        FAIL,
        f"{t.user} may not create databases (needed by `moviectl testdb`)",
        f'as a superuser: ALTER ROLE "{t.user}" CREATEDB',
    )
