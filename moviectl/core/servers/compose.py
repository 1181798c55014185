"""Read the compose file's ``db`` service, with Compose's variable interpolation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moviectl.infra.errors import ConfigError, InputFileError

_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")
_UNITS = {"h": 3600e9, "m": 60e9, "s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?err}``, ``$VAR``, ``$$``."""

    def repl(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        expr = m.group("braced") if m.group("braced") is not None else m.group("named")
        for op in (":-", "-", ":?", "?"):
            if op in expr:
                name, arg = expr.split(op, 1)
                val = env.get(name)
                unset = val is None or (op.startswith(":") and val == "")
                if op.endswith("-"):
                    return arg if unset else str(val)
                if unset:
                    raise ConfigError(f"compose file: variable {name} is required: {arg}")
                return str(val)
        return env.get(expr, "")

    return _VAR.sub(repl, value)


def _walk(obj: Any, env: Mapping[str, str]) -> Any:
    if isinstance(obj, str):
        return interpolate(obj, env)
    if isinstance(obj, list):
        return [_walk(v, env) for v in obj]
    if isinstance(obj, dict):
        return {k: _walk(v, env) for k, v in obj.items()}
    return obj


def duration_ns(text: str | int | None, default: float) -> int:
    if text is None:
        return int(default * 1e9)
    if isinstance(text, int):
        return text * 1_000_000_000
    total = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))
    return int(total)


@dataclass
class DbService:
    project: str
    image: str
    environment: dict[str, str]
    host_ip: str
    host_port: int
    container_port: int
    volume: str | None  # named volume (without the project prefix)
    volume_target: str
    healthcheck: dict[str, Any] = field(default_factory=dict)
    restart: str | None = None
    config_file: Path = Path()
    working_dir: Path = Path()
    secrets: dict[str, Path] = field(default_factory=dict)  # target name → host file
    # host directory → the same path in the container (`pitr enable`: the WAL archive)
    binds: dict[str, str] = field(default_factory=dict)

    @property
    def container_name(self) -> str:
        return f"{self.project}-db-1"

    @property
    def network_name(self) -> str:
        return f"{self.project}_default"

    @property
    def volume_name(self) -> str | None:
        return f"{self.project}_{self.volume}" if self.volume else None


def compose_path(configured: Path) -> Path:
    """The configured compose file, else the one shipped with moviectl (for the default)."""
    default = Path("compose/docker-compose.yml")
    if configured.exists() or configured.parts[-2:] != default.parts:
        return configured
    here = Path(__file__).resolve().parents[2]  # moviectl/
    for candidate in (here / "_compose", here.parent / "compose"):
        if (candidate / "docker-compose.yml").is_file():
            return candidate / "docker-compose.yml"
    return configured


def load_compose(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputFileError(
            f"compose file not found: {path}", hint="set MOVIE_COMPOSE_FILE to the compose file"
        ) from None
    except yaml.YAMLError as exc:
        raise InputFileError(f"compose file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise InputFileError(f"compose file {path} has no services")
    walked: dict[str, Any] = _walk(raw, env)
    return walked


def _dotenv_project(directory: Path) -> str | None:
    """COMPOSE_PROJECT_NAME from the ``.env`` beside the compose file (as Compose reads it)."""
    from moviectl.infra.envfile import read_dotenv

    return read_dotenv(directory / ".env").get("COMPOSE_PROJECT_NAME", (None, 0))[0]


def _parse_port(spec: Any) -> tuple[str, int, int]:
    if isinstance(spec, dict):
        return (
            str(spec.get("host_ip", "0.0.0.0")),
            int(spec["published"]),
            int(spec["target"]),
        )
    parts = str(spec).split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2].split("/")[0])
    if len(parts) == 2:
        return "0.0.0.0", int(parts[0]), int(parts[1].split("/")[0])
    raise ValueError(spec)


def db_service(path: Path, env: Mapping[str, str], project: str | None = None) -> DbService:
    """The ``db`` service of the compose file at ``path``, interpolated with ``env``."""
    path = path.resolve()
    doc = load_compose(path, env)
    svc = doc["services"].get("db")
    if not isinstance(svc, dict) or not svc.get("image"):
        raise InputFileError(f"compose file {path} has no `db` service with an image")
    name = project or env.get("COMPOSE_PROJECT_NAME") or _dotenv_project(path.parent) or "moviectl"
    name = re.sub(r"[^a-z0-9_-]", "", str(name).lower()) or "moviectl"
    environment = svc.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    try:
        host_ip, host_port, container_port = _parse_port((svc.get("ports") or ["5432:5432"])[0])
    except (ValueError, KeyError) as exc:
        raise InputFileError(f"compose file {path}: bad port mapping {exc}") from None
    volume, target = None, "/var/lib/postgresql/data"
    for v in svc.get("volumes") or []:
        src, _, dst = str(v).partition(":")
        if dst and not src.startswith((".", "/")):
            volume, target = src, dst.split(":")[0]
    secrets: dict[str, Path] = {}
    top = doc.get("secrets") or {}
    for item in svc.get("secrets") or []:
        source = str(item.get("source") if isinstance(item, dict) else item)
        mount = str((item.get("target") if isinstance(item, dict) else None) or source)
        spec = top.get(source) if isinstance(top, dict) else None
        if not isinstance(spec, dict) or not spec.get("file"):
            raise InputFileError(f"compose file {path}: secret {source!r} has no file")
        secrets[mount] = (path.parent / str(spec["file"])).resolve()
    return DbService(
        project=name,
        image=str(svc["image"]),
        environment={str(k): str(v) for k, v in environment.items()},
        host_ip=host_ip,
        host_port=host_port,
        container_port=container_port,
        volume=volume,
        volume_target=target,
        healthcheck=svc.get("healthcheck") or {},
        restart=svc.get("restart"),
        config_file=path,
        working_dir=path.parent,
        secrets=secrets,
    )
