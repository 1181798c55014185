"""pg_dump inside the db container, when no host pg_dump is new enough."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moviectl.core.backups import compression
from moviectl.core.backups.compression import Compression
from moviectl.core.backups.fileio import Progress
from moviectl.infra.errors import MoviectlError, ToolMissing, UsageError
from moviectl.infra.pgtools import compression_probe, compressions_from
from moviectl.infra.settings import DbTarget, Settings


def dump_in_container(
    settings: Settings,
    target: DbTarget,
    tmp: Path,
    fmt: str,
    progress: Progress | None,
    snapshot: str | None = None,
    compress: str | None = None,
    readable: frozenset[str] | None = None,
) -> tuple[str, str, Compression]:
    """Stream ``pg_dump`` from the running db container into ``tmp``; (via, version, the
    compression chosen for the image's pg_dump as for a host one). ``readable``: what the
    host's PostgreSQL tools decompress (restore and verify run them, not the image's):
    neither the default nor ``--compress`` makes a backup they cannot read."""
    from moviectl.core.servers.docker import DockerBackend
    from moviectl.core.servers.docker_engine import engine_answers

    hint = "install a PostgreSQL client as new as the server, or set MOVIE_PG_BIN_DIR"
    if settings.db_backend not in ("docker", "auto") or not engine_answers():
        raise ToolMissing("no pg_dump as new as the server was found", hint=hint)
    backend = DockerBackend(settings)
    c = backend.container()
    if c is None or c.status != "running":
        raise ToolMissing("no pg_dump as new as the server, and no running db container", hint=hint)
    if fmt == "directory":
        raise ToolMissing("--format directory needs a host pg_dump", hint=hint)
    api = backend.client.api
    version = c.exec_run(["pg_dump", "--version"]).output.decode().strip().split()[-1]
    methods = _compressions(c, version)
    comp = compression.choose(compress, fmt, f"in container {c.name}", version, methods)
    if readable is not None and comp.method not in readable | {"gzip", "none"}:
        if compress is not None:
            raise UsageError(
                f"--compress {compress}: the pg_restore on this host cannot read "
                f"{comp.method} (restore and verify run it), so the backup could not be checked",
                hint="use --compress gzip[:LEVEL], or point MOVIE_PG_BIN_DIR at PostgreSQL "
                f"16+ client tools built with {comp.method}",
            )
        comp = compression.default(fmt, methods & readable)
    user = target.user
    cmd = [
        "pg_dump",
        f"-F{'c' if fmt == 'custom' else 'p'}",
        "-h",
        "127.0.0.1",
        "-U",
        user,
        "-d",
        target.database,
    ]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    cmd += compression.z_argv(comp, version)
    exec_id = api.exec_create(c.id, cmd, environment={"PGPASSWORD": target.password or ""})
    written, errors = 0, b""
    try:
        with open(tmp, "wb") as fh:
            for out, err in api.exec_start(exec_id, stream=True, demux=True):
                if out:
                    fh.write(out)
                    written += len(out)
                    if progress:
                        progress(written)
                if err:
                    errors += err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    code = api.exec_inspect(exec_id).get("ExitCode")
    if code != 0:
        tmp.unlink(missing_ok=True)
        last = (errors.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise MoviectlError(f"pg_dump in container {c.name} failed: {last}")
    return f"docker exec {c.name}", version, comp


def _compressions(container: Any, version: str) -> frozenset[str]:
    """What the image's pg_dump compresses with (asked as a host one is: ``pgtools``)."""
    answers = {}
    for tail in compression_probe(version):
        res = container.exec_run(["pg_dump", *tail], environment={"LC_ALL": "C"}, demux=True)
        answers[tail[1].split(":")[0]] = (res.output[1] or b"").decode(errors="replace")
    return compressions_from(answers)
