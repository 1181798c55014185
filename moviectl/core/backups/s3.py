"""An S3-compatible bucket as a backup repository, over obstore (the ``moviectl[s3]`` extra).

obstore imports in a fraction of a second and streams a multipart upload from a Python
iterator, so a dump goes to the bucket without a local copy. The object appears under its
name only when the upload completes; a failed upload is aborted by obstore, a killed one
leaves invisible parts for the bucket's lifecycle rule (docs/safety.md).

Settings, as every AWS tool reads them: ``AWS_ENDPOINT_URL`` (S3-compatible servers),
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
/ ``AWS_SESSION_TOKEN``, else the ``[AWS_PROFILE]`` section of ``AWS_SHARED_CREDENTIALS_FILE``
(default ``~/.aws/credentials``). Every request is bounded by ``MOVIE_STALL_TIMEOUT``.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from moviectl.core.backups.objects import BLOCK, DOCUMENT_LIMIT, ObjectInfo
from moviectl.infra.conninfo import mask_locations
from moviectl.infra.errors import (
    AuthFailed,
    InputFileError,
    MoviectlError,
    ToolMissing,
    Unreachable,
    UsageError,
)

if TYPE_CHECKING:
    from obstore.store import ClientConfig

    from moviectl.infra.settings import Settings

PART = 8 << 20  # multipart chunk: bounded memory (a few parts in flight), few requests


def _obstore() -> Any:
    try:
        import obstore
    except ImportError:
        raise ToolMissing(
            "object storage needs the obstore package",
            hint="install moviectl with the s3 extra: pip install 'moviectl[s3]'",
        ) from None
    return obstore


def credentials_file() -> dict[str, str]:
    """Keys from the shared credentials file when the environment has none."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return {}
    path = Path(
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or Path.home() / ".aws" / "credentials"
    )
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        raise UsageError(f"cannot read the AWS credentials file {path}") from None
    section = os.environ.get("AWS_PROFILE", "default")
    if not parser.has_section(section):
        return {}
    keys = {
        "access_key_id": "aws_access_key_id",
        "secret_access_key": "aws_secret_access_key",
        "token": "aws_session_token",
    }
    return {k: parser.get(section, v) for k, v in keys.items() if parser.has_option(section, v)}


class S3Repository:
    remote = True

    def __init__(self, bucket: str, prefix: str, wait: float) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint = (
            os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get("AWS_ENDPOINT")
            or "https://s3.amazonaws.com"
        )
        self.wait = wait
        self._store: Any = None
        self._reader: Any = None

    @classmethod
    def from_url(cls, url: str, settings: Settings | None) -> S3Repository:
        try:
            parts = urlsplit(url)
        except ValueError:  # s3://[bucket: an unclosed IPv6 bracket
            parts = urlsplit("s3://")
        if not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
            raise UsageError(
                f"bad repository URL {mask_locations(url)!r}",
                hint="s3://BUCKET/PREFIX (credentials go in AWS_*)",
            )
        wait = float(settings.stall_timeout) if settings is not None else 30.0
        return cls(parts.netloc, parts.path, max(5.0, wait))

    @property
    def store(self) -> Any:
        """For every request but a download: each one (a part of an upload included)
        finishes within the wait, so a server that stops reading cannot hold a backup."""
        if self._store is None:
            self._store = self._client({"timeout": timedelta(seconds=self.wait)})
        return self._store

    @property
    def reader(self) -> Any:
        """For downloads: a large backup takes longer than the wait to arrive, so the
        bound is on silence (no byte for the wait), not on the whole body."""
        if self._reader is None:
            self._reader = self._client({"read_timeout": timedelta(seconds=self.wait)})
        return self._reader

    def _client(self, bound: ClientConfig) -> Any:
        _obstore()  # the extra's hint when it is missing
        from obstore.store import S3Store

        extra: dict[str, Any] = {}
        creds = credentials_file()
        if creds:
            extra["access_key_id"] = creds["access_key_id"]
            extra["secret_access_key"] = creds.get("secret_access_key", "")
            if "token" in creds:
                extra["token"] = creds["token"]
        if not (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")):
            extra["region"] = "us-east-1"  # what S3-compatible servers accept
        wait = timedelta(seconds=self.wait)
        options: ClientConfig = {
            "allow_http": self.endpoint.startswith("http://"),
            "connect_timeout": timedelta(seconds=min(10.0, self.wait)),
        }
        options.update(bound)
        try:
            return S3Store(
                self.bucket,
                endpoint=self.endpoint,
                client_options=options,
                retry_config={
                    "max_retries": 2,
                    "retry_timeout": wait,
                    "backoff": {
                        "init_backoff": timedelta(milliseconds=200),
                        "max_backoff": timedelta(seconds=2),
                        "base": 2,
                    },
                },
                **extra,
            )
        except Exception as exc:  # a malformed setting: never echo its value
            raise UsageError(
                f"cannot configure the S3 client for {self.endpoint}: {type(exc).__name__}",
                hint="check AWS_ENDPOINT_URL and AWS_REGION",
            ) from None

    def key(self, name: str) -> str:
        if not name or name.startswith(("/", ".")) or ".." in name.split("/"):
            raise InputFileError(f"bad object name {name!r}")
        return f"{self.prefix}/{name}" if self.prefix else name

    def where(self, name: str) -> str:
        return f"{self.url}/{name}"

    def fail(self, exc: BaseException, doing: str) -> NoReturn:
        raise translate(exc, self, doing) from None

    def check(self) -> None:
        """One listing page: the endpoint answers, the keys sign, the bucket exists."""
        try:
            base = f"{self.prefix}/" if self.prefix else None
            for _ in _obstore().list(self.store, prefix=base, chunk_size=1):
                break  # one page is the answer: no need to list a large bucket
        except MoviectlError:
            raise
        except Exception as exc:
            self.fail(exc, "reaching the repository")

    def put(self, name: str, source: Path | Iterable[bytes]) -> int:
        obstore = _obstore()
        counted = _Counted(source if not isinstance(source, Path) else _file_blocks(source))
        try:
            obstore.put(
                self.store, self.key(name), iter(counted), chunk_size=PART, max_concurrency=4
            )
        except MoviectlError:
            raise
        except Exception as exc:
            self.fail(exc, f"uploading {name}")
        return counted.n

    def stream(self, name: str) -> Iterator[bytes]:
        obstore = _obstore()
        try:
            result = obstore.get(self.reader, self.key(name))
            for chunk in result.stream(min_chunk_size=BLOCK):
                yield bytes(chunk)
        except Exception as exc:
            self.fail(exc, f"downloading {name}")

    def get(self, name: str, dest: Path) -> int:
        with open(dest, "wb") as out:
            for block in self.stream(name):
                out.write(block)
            return out.tell()

    def read_bytes(self, name: str) -> bytes:
        parts, n = [], 0
        for block in self.stream(name):  # a hostile huge object is refused, not held
            parts.append(block)
            n += len(block)
            if n > DOCUMENT_LIMIT:
                raise InputFileError(f"{self.where(name)} is larger than {DOCUMENT_LIMIT} bytes")
        return b"".join(parts)

    def write_bytes(self, name: str, data: bytes) -> None:
        obstore = _obstore()
        try:
            obstore.put(self.store, self.key(name), data, use_multipart=False)
        except Exception as exc:
            self.fail(exc, f"writing {name}")

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        obstore = _obstore()
        base = f"{self.prefix}/" if self.prefix else ""
        try:
            found = []
            for batch in obstore.list(self.store, prefix=base + prefix if base or prefix else None):
                for meta in batch:
                    rel = str(meta["path"])[len(base) :]
                    if "/" in rel:  # deeper "folders" (WAL archives) are not backups
                        continue
                    found.append(ObjectInfo(rel, int(meta["size"]), _utc(meta["last_modified"])))
        except Exception as exc:
            self.fail(exc, "listing")
        return sorted(found, key=lambda o: o.name)

    def stat(self, name: str) -> ObjectInfo | None:
        obstore = _obstore()
        try:
            meta = obstore.head(self.store, self.key(name))
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                self.fail(exc, f"reading {name}")
            return None
        except Exception as exc:
            self.fail(exc, f"reading {name}")
        return ObjectInfo(name, int(meta["size"]), _utc(meta["last_modified"]))

    def delete(self, name: str) -> None:
        obstore = _obstore()
        try:
            obstore.delete(self.store, self.key(name))
        except FileNotFoundError:
            return
        except Exception as exc:
            self.fail(exc, f"deleting {name}")


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _file_blocks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        yield from iter(lambda: fh.read(BLOCK), b"")


class _Counted:
    """The blocks of ``source``, counted as obstore pulls them."""

    def __init__(self, source: Iterable[bytes]) -> None:
        self.source = source
        self.n = 0

    def __iter__(self) -> Iterator[bytes]:
        for block in self.source:
            self.n += len(block)
            yield block


def translate(exc: BaseException, repo: S3Repository, doing: str) -> MoviectlError:
    """obstore's error as one line naming the endpoint and bucket, never a key."""
    from obstore import exceptions as oe

    text = str(exc)
    at = f"{repo.url} at {repo.endpoint}"
    if "NoSuchBucket" in text:
        return UsageError(
            f"{doing}: the bucket {repo.bucket!r} does not exist at {repo.endpoint}",
            hint=f"create it first (e.g. `aws s3 mb s3://{repo.bucket}`) or fix the URL",
        )
    if isinstance(exc, oe.PermissionDeniedError | oe.UnauthenticatedError) or any(
        w in text for w in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied")
    ):
        return AuthFailed(
            f"{doing}: {at} refused the credentials",
            hint="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the credentials file)",
        )
    if isinstance(exc, FileNotFoundError):
        return InputFileError(f"{doing}: not found in {repo.url}")
    low = text.lower()
    if "connectionrefused" in low or "connection refused" in low:
        return Unreachable(
            f"{doing}: nothing answers at {repo.endpoint} (connection refused) for {repo.url}",
            hint="is the object store running? check AWS_ENDPOINT_URL",
        )
    if any(w in low for w in ("connect", "timed out", "timeout", "dns", "reset", "broken pipe")):
        return Unreachable(
            f"{doing}: {at} did not answer within {repo.wait:g} s",
            hint="is the object store running and reachable? (MOVIE_STALL_TIMEOUT bounds the wait)",
        )
    first = text.splitlines()[0] if text else type(exc).__name__
    return MoviectlError(f"{doing} in {at} failed: {first[:300]}")
