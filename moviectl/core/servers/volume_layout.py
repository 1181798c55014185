"""Where the db container keeps its data, by the image's major, and what a volume holds.

The official images up to 17 keep the cluster at ``/var/lib/postgresql/data`` (their
``VOLUME``); 18 and later keep it at ``/var/lib/postgresql/<major>/docker`` and refuse a
mount at ``.../data``: the volume goes at ``/var/lib/postgresql``. A volume made for one
layout is read by a throwaway container of the image at hand (no registry, no host path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from moviectl.infra.errors import Refused

LEGACY_MOUNT = "/var/lib/postgresql/data"  # images up to 17: the cluster at the volume's root
MOUNT_18 = "/var/lib/postgresql"  # 18+: the cluster in <major>/docker inside the volume
MOUNT_VARIABLE = "POSTGRES_DATA_MOUNT"  # the compose file's ${...} for the mount point


def image_major(image: str) -> int | None:
    """The major a tag names (``postgres:18``, ``postgres:16.4-alpine``, ``x/pg:15-offline``)."""
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    m = re.match(r"(\d+)", tag)
    return int(m.group(1)) if m else None


def data_mount(image: str) -> str:
    major = image_major(image)
    return MOUNT_18 if major is not None and major >= 18 else LEGACY_MOUNT


# What the volume holds: `legacy <major>` for a cluster at its root, `18+ <dir> <major>` per
# <major>/docker cluster inside it. POSIX sh only: any image with a shell can answer.
_SCRIPT = (
    'cd /v || exit 0; [ -f PG_VERSION ] && echo "legacy . $(cat PG_VERSION)"; '
    'for f in */docker/PG_VERSION; do [ -f "$f" ] && echo "18+ ${f%/PG_VERSION} $(cat "$f")"; '
    "done; true"
)


@dataclass
class VolumeLayout:
    volume: str
    layout: str  # empty | legacy | 18+
    major: int | None
    path: str  # the cluster's directory inside the volume ("." for legacy)

    def describe(self) -> str:
        if self.layout == "empty":
            return f"volume {self.volume} holds no cluster yet"
        where = (
            f"at the volume's root (mounted at {LEGACY_MOUNT}: images up to 17)"
            if self.layout == "legacy"
            else f"in {self.path} (mounted at {MOUNT_18}: the 18+ layout)"
        )
        return f"volume {self.volume} holds PostgreSQL {self.major} data {where}"

    def fits(self, image: str) -> bool:
        major = image_major(image)
        if self.layout == "empty" or major is None:
            return True
        want = "18+" if major >= 18 else "legacy"
        return self.layout == want and self.major == major


def read_layout(client: Any, volume: str, image: str) -> VolumeLayout:
    """Ask a throwaway container of ``image`` (read-only mount, no network) what ``volume``
    holds; several clusters in one volume: the newest counts."""
    out = client.containers.run(
        image,
        entrypoint=["sh", "-c", _SCRIPT],
        volumes={volume: {"bind": "/v", "mode": "ro"}},
        network_disabled=True,
        remove=True,
        user="0",
    )
    found = []
    for line in out.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].split(".")[0].isdigit():
            found.append(VolumeLayout(volume, parts[0], int(parts[2].split(".")[0]), parts[1]))
    if not found:
        return VolumeLayout(volume, "empty", None, "")
    return max(found, key=lambda v: v.major or 0)


def refuse_other_major(client: Any, volume: str | None, image: str) -> None:
    """Before a container of ``image`` starts on ``volume``: data of another major (or laid
    out for other images) is refused with the upgrade that moves it, never initialised over."""
    from docker.errors import NotFound

    if not volume:
        return
    try:
        client.volumes.get(volume)
    except NotFound:
        return
    found = read_layout(client, volume, image)
    if found.fits(image):
        return
    major = image_major(image)
    if found.major is not None and major is not None and found.major < major:
        hint = (
            f"moviectl db upgrade --to {major} --dry-run, then moviectl db upgrade --to "
            f"{major} --yes (the new image: MOVIE_DB_IMAGE={image}); or keep MOVIE_DB_IMAGE "
            f"at a PostgreSQL {found.major} image"
        )
    else:
        hint = f"set MOVIE_DB_IMAGE to a PostgreSQL {found.major} image (a major never goes back)"
    raise Refused(
        f"{found.describe()}; the image {image} is PostgreSQL {major}: refusing to start it "
        "on that volume",
        hint=hint,
        volume=volume,
        data_major=found.major,
    )
