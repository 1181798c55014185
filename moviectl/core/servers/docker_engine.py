"""The Docker engine as moviectl uses it: the client, labels, ownership, the config hash.

Every resource moviectl creates carries Compose's labels (so both Compose clients see it)
and ``io.moviectl.owner``: the checkout that made it. Only its owner stops or deletes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from moviectl.core.servers.compose import DbService, duration_ns
from moviectl.core.servers.volume_layout import MOUNT_VARIABLE, data_mount
from moviectl.infra.errors import Refused, ServerError
from moviectl.infra.settings import Settings

COMPOSE_VERSION = "2.29.0"  # the Compose version whose labels we write


def engine_answers(timeout: int = 2) -> bool:
    """Does a Docker engine answer here (DOCKER_HOST or the default socket)?"""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def client(timeout: int = 60) -> Any:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client
    except DockerException as exc:
        text = str(exc)
        if "Permission denied" in text or "PermissionError" in text:
            raise ServerError(
                "permission denied on the Docker socket",
                hint="add your user to the `docker` group (then log in again), "
                "or use MOVIE_DB_BACKEND=embedded",
            ) from None
        raise ServerError(
            "the Docker engine is not reachable (MOVIE_DB_BACKEND=docker)",
            hint="start Docker (e.g. `sudo systemctl start docker`), "
            "or use MOVIE_DB_BACKEND=embedded",
        ) from None


def compose_env(settings: Settings) -> dict[str, str]:
    """Variables for the compose file: the environment, with moviectl's settings on top."""
    t = settings.target()
    env = dict(os.environ)
    env.update(
        MOVIE_DB_USER=t.user,
        MOVIE_DB_PASSWORD=t.password or "",
        MOVIE_DB_PASSWORD_FILE=str(password_file(settings)),
        MOVIE_DB_NAME=t.database,
        MOVIE_DB_PORT=str(t.port),
        MOVIE_DB_IMAGE=settings.db_image,
    )
    env.setdefault(MOUNT_VARIABLE, data_mount(settings.db_image))  # unless set by hand
    if settings.compose_project:
        env["MOVIE_COMPOSE_PROJECT"] = settings.compose_project
    return env


def by_hand_env(compose_file: Path) -> dict[str, str]:
    """What `docker compose` interpolates the file with when run by hand here: the ``.env``
    beside the file, under the shell's environment (Compose's order, both clients)."""
    from moviectl.infra.envfile import read_dotenv

    env = {k: v for k, (v, _) in read_dotenv(compose_file.parent / ".env").items() if v is not None}
    env.update(os.environ)
    return env


def config_hash(svc: DbService) -> str:
    """The label Compose v2 needs to list a container (``ps``, ``ls``): a digest of the
    service's configuration. Secrets are left out: a label is readable by `docker inspect`.
    """
    import hashlib
    import json

    env = {k: v for k, v in svc.environment.items() if "PASSWORD" not in k.upper()}
    config = {
        "image": svc.image,
        "environment": env,
        "ports": [svc.host_ip, svc.host_port, svc.container_port],
        "volume": [svc.volume, svc.volume_target],
        "healthcheck": svc.healthcheck,
        "restart": svc.restart,
    }
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


OWNER_LABEL = "io.moviectl.owner"


def owner_of(settings: Settings) -> str:
    """This checkout's identity on the Docker engine: its data directory's absolute path."""
    return str(Path(settings.data_dir).resolve())


def promote_copy_name(svc: DbService) -> str:
    """The container a `pitr promote` copies the restored cluster into the volume with."""
    return f"{svc.container_name}-promote-copy"


def labels(svc: DbService, owner: str, **extra: str) -> dict[str, str]:
    return {
        "com.docker.compose.project": svc.project,
        "com.docker.compose.version": COMPOSE_VERSION,
        OWNER_LABEL: owner,
        **extra,
    }


class ImageUnavailable(ServerError):
    """The image is not here and cannot be pulled (``auto`` then falls back to embedded)."""


def password_file(settings: Settings) -> Path:
    """The file the db container reads its password from (POSTGRES_PASSWORD_FILE)."""
    project = settings.compose_project or "moviectl"
    return Path(settings.data_dir).resolve() / "secrets" / f"{project}-postgres-password"


def write_password_file(path: Path, password: str) -> None:
    """Write the password where the container reads it: 0600 in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password)
    os.replace(tmp, path)


def secrets_as_files(
    svc: DbService, settings: Settings, password: str
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """The container's environment and bind mounts with every secret as a read-only file.

    A ``POSTGRES_PASSWORD`` in the compose file becomes ``POSTGRES_PASSWORD_FILE`` too, so
    `docker inspect` never shows a password, whatever the compose file says.
    """
    env = dict(svc.environment)
    files = dict(svc.secrets)
    if "POSTGRES_PASSWORD" in env:
        env.pop("POSTGRES_PASSWORD")
        env["POSTGRES_PASSWORD_FILE"] = "/run/secrets/postgres-password"
        files["postgres-password"] = password_file(settings)
    own = password_file(settings)
    if own in files.values():
        write_password_file(own, password)
    mounts = {
        str(host): {"bind": f"/run/secrets/{name}", "mode": "ro"} for name, host in files.items()
    }
    return env, mounts


# settings that only count when the data volume is first initialised (the image's contract)
DATA_BOUND = ("user", "database")


def container_drift(attrs: dict[str, Any], svc: DbService) -> dict[str, tuple[str, str]]:
    """What differs between an existing db container and the settings: {what: (is, wanted)}."""
    env = dict(e.split("=", 1) for e in (attrs.get("Config") or {}).get("Env") or [] if "=" in e)
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).get(
        f"{svc.container_port}/tcp"
    ) or [{}]
    published = f"{bindings[0].get('HostIp') or '0.0.0.0'}:{bindings[0].get('HostPort', '')}"
    wanted = {
        "port": (published, f"{svc.host_ip}:{svc.host_port}"),
        "image": ((attrs.get("Config") or {}).get("Image", ""), svc.image),
        "user": (env.get("POSTGRES_USER", ""), svc.environment.get("POSTGRES_USER", "")),
        "database": (env.get("POSTGRES_DB", ""), svc.environment.get("POSTGRES_DB", "")),
    }
    binds = [b.split(":") for b in (attrs.get("HostConfig") or {}).get("Binds") or []]
    mounted = {b[0]: b[1] for b in binds if len(b) >= 2}
    missing = sorted(f"{s}:{d}" for s, d in svc.binds.items() if mounted.get(s) != d)
    if missing:  # `pitr enable` added the WAL archive: recreated with it (data volume kept)
        wanted["mounts"] = ("without " + ", ".join(missing), "with them")
    return {k: v for k, v in wanted.items() if v[0] != v[1]}


def read_binds(path: Path) -> dict[str, str]:
    """The extra bind mounts `pitr enable` recorded for a project's db container."""
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def binds_path(settings: Settings, project: str) -> Path:
    return Path(settings.data_dir).resolve() / f".docker-{project}.binds.json"


def recorded_binds(settings: Settings, project: str) -> dict[str, str]:
    return read_binds(binds_path(settings, project))


def published_port(attrs: dict[str, Any], container_port: int) -> int | None:
    bindings = ((attrs.get("HostConfig") or {}).get("PortBindings") or {}).get(
        f"{container_port}/tcp"
    ) or [{}]
    port = str(bindings[0].get("HostPort") or "")
    return int(port) if port.isdigit() else None


def refuse_foreign(
    kind: str, name: str, found_labels: dict[str, str] | None, owner: str, *, use: bool = False
) -> None:
    """Refuse to touch a resource another checkout made (or, to remove, one nobody labelled
    as moviectl's): a checkout only stops and deletes what it created."""
    found = (found_labels or {}).get(OWNER_LABEL)
    if found == owner:
        return
    if found is None and use:
        return  # made by `docker compose` for this project: moviectl may use it
    whose = f"another moviectl checkout ({found})" if found else "not moviectl"
    verb = "use" if use else "stop or delete"
    raise Refused(
        f"{kind} {name} belongs to {whose}: refusing to {verb} it",
        hint="give this checkout its own MOVIE_COMPOSE_PROJECT (and MOVIE_DB_PORT), "
        f"or manage {name} with docker / docker compose yourself",
    )


def split_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    buf = b""
    for chunk in chunks:
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")


def create_kwargs(
    svc: DbService, owner: str, environment: dict[str, str], secret_mounts: dict[str, Any]
) -> dict[str, Any]:
    """``containers.create`` arguments for the ``db`` service, labelled as Compose labels."""
    hc = svc.healthcheck
    test = hc.get("test")
    healthcheck = (
        {
            "test": test if isinstance(test, list) else ["CMD-SHELL", str(test)],
            "interval": duration_ns(hc.get("interval"), 30),
            "timeout": duration_ns(hc.get("timeout"), 30),
            "retries": int(hc.get("retries", 3)),
            "start_period": duration_ns(hc.get("start_period"), 0),
        }
        if test
        else None
    )
    volumes = {
        **({svc.volume_name: {"bind": svc.volume_target, "mode": "rw"}} if svc.volume_name else {}),
        **secret_mounts,
        **{src: {"bind": dst, "mode": "rw"} for src, dst in svc.binds.items()},
    }
    return {
        "image": svc.image,
        "name": svc.container_name,
        "environment": environment,
        "labels": labels(
            svc,
            owner,
            **{
                "com.docker.compose.service": "db",
                "com.docker.compose.container-number": "1",
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.project.config_files": str(svc.config_file),
                "com.docker.compose.project.working_dir": str(svc.working_dir),
                "com.docker.compose.image": svc.image,
                "com.docker.compose.config-hash": config_hash(svc),
            },
        ),
        "ports": {f"{svc.container_port}/tcp": (svc.host_ip, svc.host_port)},
        "volumes": volumes or None,
        "healthcheck": healthcheck,
        "restart_policy": {"Name": svc.restart} if svc.restart else None,
        "network": svc.network_name,
        "detach": True,
    }


def refuse_recreate(c: Any, drift: dict[str, tuple[str, str]], owner: str, svc: DbService) -> None:
    """Refuse what a recreate cannot change (settings the data was initialised with) or
    must not (a container Compose made), naming the way out."""
    said = "; ".join(f"{k} {was} → {want}" for k, (was, want) in drift.items())
    bound = [k for k in drift if k in DATA_BOUND]
    if bound:
        was = {k: drift[k][0] for k in bound}
        keep = " ".join(
            f"MOVIE_DB_{'NAME' if k == 'database' else 'USER'}={v}" for k, v in was.items()
        )
        raise Refused(
            f"container {c.name} was made for {', '.join(f'{k} {v}' for k, v in was.items())};"
            f" the settings say otherwise ({said}), and its data was initialised that way",
            hint=f"keep the data with {keep}, or start afresh (deletes the data): "
            "moviectl db down --volumes --yes && moviectl db up",
        )
    if (c.labels or {}).get(OWNER_LABEL) != owner:
        raise Refused(
            f"container {c.name} was made by docker compose with other settings ({said})",
            hint=f"recreate it with the settings: docker compose -p {svc.project} -f "
            f"{svc.config_file} up -d db (with MOVIE_* exported), or stop it",
        )


def wait_for_logins(c: Any, target: Any, timeout: float, name: str) -> str:
    """Wait for authenticated connections to container ``c``, failing fast if it exits."""
    from moviectl.core.servers.base import not_ready_yet, ready_version
    from moviectl.infra.waiting import poll_until

    def attempt() -> str:
        c.reload()
        state = c.attrs.get("State", {})
        crashed = state.get("RestartCount", 0) > 0 or c.attrs.get("RestartCount", 0) > 0
        if c.status in ("exited", "dead", "restarting") or crashed:
            tail = c.logs(tail=15).decode(errors="replace").strip()
            raise ServerError(
                f"the db container exited during start (status {c.status}); last log lines:\n"
                f"{tail}",
                hint=f"docker logs {name}",
                log_tail=tail,
            )
        return ready_version(target, 1)

    # a crash is final, even when its log tail says "starting up"
    return poll_until(
        attempt,
        timeout,
        0.2,
        retry=lambda exc: not isinstance(exc, ServerError) and not_ready_yet(exc),
    )
