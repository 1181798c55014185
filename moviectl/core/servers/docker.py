"""The Docker backend: the compose file's ``db`` service, realised through the Docker SDK.

Network, named volume and container carry Docker Compose's own labels, so
``docker compose -f compose/docker-compose.yml ps | logs | down`` see them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from moviectl.core.servers.base import (
    DownResult,
    ServerStatus,
    UpResult,
    probe_status,
)
from moviectl.core.servers.compose import compose_path, db_service
from moviectl.core.servers.docker_engine import (
    OWNER_LABEL,
    ImageUnavailable,
    client,
    compose_env,
    container_drift,
    create_kwargs,
    labels,
    owner_of,
    promote_copy_name,
    published_port,
    recorded_binds,
    refuse_foreign,
    refuse_recreate,
    secrets_as_files,
    split_lines,
    wait_for_logins,
)
from moviectl.core.servers.docker_upgrade import recover_interrupted
from moviectl.core.servers.volume_layout import refuse_other_major
from moviectl.infra.errors import LockBusy, PortInUse, ServerError
from moviectl.infra.ports import describe_port_owner, port_is_free
from moviectl.infra.settings import Settings

PullCallback = Callable[[dict[str, Any]], None]


class DockerBackend:
    name = "docker"

    def __init__(self, settings: Settings, progress: PullCallback | None = None) -> None:
        self.settings = settings
        self.progress = progress
        self.owner = owner_of(settings)
        compose = compose_path(Path(settings.compose_file))
        self.svc = db_service(compose, compose_env(settings), settings.compose_project)
        self.svc.binds = recorded_binds(settings, self.svc.project)  # `pitr enable`'s
        self._docker: Any = None

    @property
    def client(self) -> Any:
        if self._docker is None:
            self._docker = client()
        return self._docker

    # ---- resources -------------------------------------------------------------------------
    def container(self) -> Any | None:
        found = self.client.containers.list(
            ignore_removed=True,
            all=True,
            filters={
                "label": [
                    f"com.docker.compose.project={self.svc.project}",
                    "com.docker.compose.service=db",
                    "com.docker.compose.oneoff=False",
                ]
            },
        )
        # the service's own name first: a container a failed recreate renamed aside
        # (Compose v1's `<id>_<name>`, moviectl's `<name>-replaced`) only when it is alone
        return next(
            (c for c in found if c.name == self.svc.container_name), found[0] if found else None
        )

    def data_resource(self) -> str | None:
        """``container NAME`` or ``volume NAME`` when this project has one, else None."""
        from docker.errors import NotFound

        c = self.container()
        if c is not None:
            return f"container {c.name}"
        if self.svc.volume_name:
            try:
                self.client.volumes.get(self.svc.volume_name)
                return f"volume {self.svc.volume_name}"
            except NotFound:
                return None
        return None

    def image_present(self) -> bool:
        from docker.errors import ImageNotFound

        try:
            self.client.images.get(self.svc.image)
            return True
        except ImageNotFound:
            return False

    def _ensure_image(self) -> None:
        from docker.errors import APIError, ImageNotFound

        image = self.svc.image
        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        try:
            for event in self.client.api.pull(repo, tag=tag or "latest", stream=True, decode=True):
                if "error" in event:
                    raise APIError(event["error"])
                if self.progress:
                    self.progress(event)
        except APIError as exc:
            reason = getattr(exc, "explanation", None) or str(exc)
            raise ImageUnavailable(
                f"cannot pull the image {image}: {reason}",
                hint="check the name and your registry access, or set MOVIE_DB_IMAGE "
                "to an image that is available locally",
            ) from None

    def _ensure_network(self) -> None:
        if not self.client.networks.list(names=[self.svc.network_name]):
            self.client.networks.create(
                self.svc.network_name,
                driver="bridge",
                labels=labels(self.svc, self.owner, **{"com.docker.compose.network": "default"}),
            )

    def _ensure_volume(self) -> None:
        from docker.errors import NotFound

        if not self.svc.volume_name:
            return
        try:
            volume = self.client.volumes.get(self.svc.volume_name)
        except NotFound:
            self.client.volumes.create(
                self.svc.volume_name,
                labels=labels(
                    self.svc, self.owner, **{"com.docker.compose.volume": str(self.svc.volume)}
                ),
            )
            return
        self._refuse_foreign("volume", self.svc.volume_name, volume.attrs.get("Labels"), use=True)

    def _create(self) -> Any:
        environment, secret_mounts = secrets_as_files(
            self.svc, self.settings, self.settings.target().password or ""
        )
        return self.client.containers.create(
            **create_kwargs(self.svc, self.owner, environment, secret_mounts),
            networking_config={
                self.svc.network_name: self.client.api.create_endpoint_config(aliases=["db"])
            },
        )

    # ---- life cycle ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        import fcntl

        d = Path(self.settings.data_dir)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / f".docker-{self.svc.project}.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _refuse_while_copying(self) -> None:
        """A cut-short `pitr promote`'s volume copy runs in a helper container that outlives
        moviectl: the server never starts on a volume still being copied into."""
        name = promote_copy_name(self.svc)
        found = self.client.containers.list(ignore_removed=True, filters={"name": name})
        if any(c.name == name for c in found):
            raise LockBusy(
                f"a cut-short `pitr promote` is still copying into volume "
                f"{self.svc.volume_name} (container {name}); the server was not started",
                hint="wait for that container to exit (`docker ps`), then `moviectl pitr "
                "promote <name> --yes` finishes the promote",
            )

    def up(self, *, wait: bool = True, timeout: float = 90) -> UpResult:
        started_at = time.monotonic()
        target = self.settings.target()
        recreated = ""
        with self._lock():  # a killed `db upgrade` first: the old volume back
            undone = recover_interrupted(self.client, self.settings.data_dir, self.svc.project)
            recreated = f"; {undone}" if undone else ""
            c = self._put_back_replaced()
            drift: dict[str, tuple[str, str]] = {}
            if c is not None:  # another checkout's database is not this one's
                self._refuse_foreign("container", c.name, c.labels, use=True)
                drift = container_drift(c.attrs, self.svc)
                if drift:  # never wait out a timeout on a container made differently
                    refuse_recreate(c, drift, self.owner, self.svc)
            already = c is not None and not drift and c.status == "running"
            if not already:
                self._refuse_while_copying()
            if drift:
                assert c is not None
                c = self._replace(c, drift, timeout)
                recreated += "; recreated ({}; data volume kept)".format(
                    "; ".join(f"{k} {was} → {want}" for k, (was, want) in drift.items())
                )
            elif not already:
                if not port_is_free(self.svc.host_ip, self.svc.host_port):
                    raise self._port_in_use()
                self._prepare()
                c = c or self._create()
                self._start(c)
            version = self._wait(c, target, timeout) if wait else None
        detail = f"container {self.svc.container_name}, image {self.svc.image}" + recreated
        return UpResult.of(
            self.name,
            target,
            already=already,
            version=version,
            started_at=started_at,
            detail=detail,
        )

    def _prepare(self) -> None:
        self._ensure_image()  # then: never a container of another major on the volume's data
        refuse_other_major(self.client, self.svc.volume_name, self.svc.image)
        self._ensure_network()
        self._ensure_volume()

    def _start(self, c: Any) -> None:
        from docker.errors import APIError

        try:
            c.start()
        except APIError as exc:
            if "port is already allocated" in str(exc) or "address already in use" in str(exc):
                raise self._port_in_use() from None
            raise ServerError(f"the db container did not start: {exc}") from None

    @property
    def _aside(self) -> str:
        return f"{self.svc.container_name}-replaced"

    def _put_back_replaced(self) -> Any | None:
        """The db container; one a killed recreate left renamed aside goes back in place and
        runs again (or, when its replacement has run, goes away): never a database left
        stopped aside, nor deleted for a replacement that never started."""
        from docker.errors import APIError, NotFound

        c = self.container()
        try:
            aside = self.client.containers.get(self._aside)
        except NotFound:
            return c
        if (aside.labels or {}).get(OWNER_LABEL) != self.owner:
            return c
        if c is not None and c.id != aside.id:
            if c.status != "created":  # the replacement ran: the recreate was done
                aside.remove(force=True)
                return c
            c.remove(force=True)  # killed between create and start: undo it
        aside.rename(self.svc.container_name)
        with contextlib.suppress(APIError):  # as before the recreate; up() goes on from there
            aside.start()
        aside.reload()
        return aside

    def _replace(self, old: Any, drift: dict[str, tuple[str, str]], timeout: float) -> Any:
        """The container made anew with the settings, the old one put back if that fails.

        Everything that can fail without touching the old one comes first (image, network,
        volume, the new port); the old one is only renamed aside while the new one starts,
        then removed. A failed start removes the new one and starts the old one again, and
        waits (bounded) until it accepts logins on its old port: a failed recreate never
        leaves the database stopped (Compose v1's does), nor still starting.
        """
        was_running = old.status == "running"
        old_port = published_port(old.attrs, self.svc.container_port)
        moved = "port" in drift and old_port != self.svc.host_port
        if moved and not port_is_free(self.svc.host_ip, self.svc.host_port):
            raise self._port_in_use()
        self._prepare()
        old.stop(timeout=10)
        old.rename(self._aside)
        new = None
        try:
            new = self._create()
            self._start(new)
        except BaseException as exc:
            if new is not None:
                with contextlib.suppress(Exception):
                    new.remove(force=True)
            old.rename(self.svc.container_name)
            if was_running:
                old.start()
                if isinstance(exc, Exception):  # Ctrl-C / SIGTERM: out at once
                    back = self.settings.target()
                    back = dataclasses.replace(back, port=old_port or back.port, port_spec=None)
                    try:
                        self._wait(old, back, timeout)
                    except Exception as why:
                        exc.add_note(f"the old container was started again but: {why}")
            raise
        old.remove(force=True)
        return new

    def _port_in_use(self) -> PortInUse:
        return PortInUse(
            f"port {self.svc.host_port} on {self.svc.host_ip} is already in use"
            f"{describe_port_owner(self.svc.host_port)}",
            hint="stop that process, or choose another port with MOVIE_DB_PORT",
            port=self.svc.host_port,
        )

    def _wait(self, c: Any, target: Any, timeout: float) -> str:
        return wait_for_logins(c, target, timeout, self.svc.container_name)

    def _refuse_foreign(
        self, kind: str, name: str, found_labels: dict[str, str] | None, *, use: bool = False
    ) -> None:
        refuse_foreign(kind, name, found_labels, self.owner, use=use)

    def down(self, *, volumes: bool = False) -> DownResult:
        """Stop and remove this checkout's container (and network; with ``volumes`` its
        data volume). Anything it did not create is refused before anything changes."""
        from docker.errors import NotFound

        with self._lock():  # never while `db upgrade` runs; a killed one undone first
            recover_interrupted(self.client, self.settings.data_dir, self.svc.project)
            c = self.container()
            if c is not None:
                self._refuse_foreign("container", c.name, c.labels)
            nets = [
                n
                for n in self.client.networks.list(names=[self.svc.network_name])
                if n.name == self.svc.network_name
            ]
            volume = None
            if volumes and self.svc.volume_name:
                try:
                    volume = self.client.volumes.get(self.svc.volume_name)
                except NotFound:
                    volume = None
                if volume is not None:
                    self._refuse_foreign("volume", volume.name, volume.attrs.get("Labels"))
            was = c is not None and c.status == "running"
            if c is not None:
                c.stop(timeout=10)
                c.remove()
            for net in nets:
                if (net.attrs.get("Labels") or {}).get(OWNER_LABEL) == self.owner:
                    with contextlib.suppress(Exception):
                        net.remove()
            removed = False
            if volume is not None:
                volume.remove()
                removed = True
        return DownResult(self.name, was, removed, f"container {self.svc.container_name}")

    def status(self) -> ServerStatus:
        target = self.settings.target()
        c = self.container()
        state = "absent" if c is None else ("running" if c.status == "running" else "stopped")
        detail = f"container {self.svc.container_name}, image {self.svc.image}"
        status = ServerStatus.of(self.name, target, state, detail)
        if c is not None:  # facts from the container found, not from whatever holds the port
            port = published_port(c.attrs, self.svc.container_port)
            if port is not None and port != target.port:
                target = dataclasses.replace(target, port=port)
                status.port, status.url = port, target.url()
                status.detail += (
                    f"; it publishes port {port}, the settings say {self.svc.host_port}: "
                    "`moviectl db up` recreates it"
                )
        if status.state == "running":
            probe_status(status, target, self.settings.connect_timeout)
        return status

    def logs(self, *, tail: int = 50, follow: bool = False) -> Iterator[str]:
        """The last ``tail`` lines, then (``follow``) new ones; the stream opens in this call."""
        c = self.container()
        if c is None:
            raise ServerError(
                f"no db container for project {self.svc.project}", hint="moviectl db up"
            )
        if not follow:
            return iter(c.logs(tail=tail).decode(errors="replace").splitlines())
        return split_lines(c.logs(tail=tail, stream=True, follow=True))
