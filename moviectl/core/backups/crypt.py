"""Encryption at rest with age (pyrage, the ``moviectl[age]`` extra).

``MOVIE_BACKUP_AGE_RECIPIENTS``: age public keys (``age1…``), separated by commas or
spaces, or the path of a recipients file (one per line, ``#`` comments). A backup to a
repository is then encrypted as it streams; the manifest records ``encryption: age``,
the recipients' fingerprints (never a key) and the stored object's sha256, while
``sha256`` stays the dump's own. Restore and verify decrypt with the identity file
``MOVIE_BACKUP_AGE_IDENTITY`` (``AGE-SECRET-KEY-1…`` lines, as age-keygen writes).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import CheckFailed, ToolMissing, UsageError

if TYPE_CHECKING:
    from moviectl.infra.settings import Settings

_END = object()


def _pyrage() -> Any:
    try:
        import pyrage
    except ImportError:
        raise ToolMissing(
            "age encryption needs the pyrage package",
            hint="install moviectl with the age extra: pip install 'moviectl[age]'",
        ) from None
    return pyrage


def fingerprint(recipient: str) -> str:
    """A short, stable name for a public key: enough to tell which key, never the key."""
    return "sha256:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def _words(settings: Settings) -> list[str]:
    spec = (settings.backup_age_recipients or "").strip()
    if not spec:
        return []
    if not spec.startswith(("age1", "ssh-")) and Path(spec).is_file():
        lines = Path(spec).read_text(encoding="utf-8").splitlines()
        return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    return [w for w in spec.replace(",", " ").split() if w]


def recipients_of(settings: Settings) -> list[Any]:
    """The configured recipients as pyrage objects (none: no encryption)."""
    words = _words(settings)
    if not words:
        return []
    pyrage = _pyrage()
    out = []
    for i, word in enumerate(words, 1):
        try:
            if word.startswith("ssh-"):
                out.append(pyrage.ssh.Recipient.from_str(word))
            else:
                out.append(pyrage.x25519.Recipient.from_str(word))
        except Exception:
            raise UsageError(
                f"MOVIE_BACKUP_AGE_RECIPIENTS: recipient {i} is not an age public key",
                hint="age1… (from `age-keygen -y KEYFILE`) or ssh-ed25519 …",
            ) from None
    return out


def encrypting(recipients: list[Any], stored_sha256: str | None) -> dict[str, Any]:
    """The manifest's encryption fields."""
    return {
        "encryption": "age",
        "recipients": [fingerprint(str(r)) for r in recipients],
        "stored_sha256": stored_sha256,
    }


class _Reader:
    def __init__(self, source: Iterator[bytes]) -> None:
        self.source, self.rest = source, b""

    def read(self, n: int = -1) -> bytes:
        while not self.rest:
            try:
                self.rest = next(self.source)
            except StopIteration:
                return b""
        n = len(self.rest) if n is None or n < 0 else n
        block, self.rest = self.rest[:n], self.rest[n:]
        return block


class _Writer:
    def __init__(self, q: queue.Queue[Any], stop: threading.Event) -> None:
        self.q, self.stop = q, stop

    def write(self, data: Any) -> int:
        block = bytes(data)
        while not self.stop.is_set():
            try:
                self.q.put(block, timeout=0.5)
                return len(block)
            except queue.Full:
                continue
        raise BrokenPipeError("the upload stopped")

    def flush(self) -> None:
        pass


def encrypt_blocks(
    source: Iterator[bytes], recipients: list[Any], stored: dict[str, Any]
) -> Iterator[bytes]:
    """``source`` encrypted for ``recipients`` as it streams (age runs in a thread, a few
    blocks ahead); ``stored["sha256"]`` is the ciphertext's hash once it ends."""
    pyrage = _pyrage()
    q: queue.Queue[Any] = queue.Queue(maxsize=8)
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            pyrage.encrypt_io(_Reader(source), _Writer(q, stop), recipients)
        except BaseException as exc:  # pg_dump failed, or the upload stopped
            failure.append(exc)
        finally:
            while not stop.is_set():
                try:
                    q.put(_END, timeout=0.5)
                    break
                except queue.Full:
                    continue

    sha = hashlib.sha256()
    thread = threading.Thread(target=work, name="moviectl-age", daemon=True)
    thread.start()
    try:
        while (block := q.get()) is not _END:
            sha.update(block)
            yield block
        if failure:
            raise failure[0]
        stored["sha256"] = sha.hexdigest()
    finally:
        stop.set()
        thread.join(timeout=5)


def identities(settings: Settings) -> list[Any]:
    """The identities of MOVIE_BACKUP_AGE_IDENTITY (a file), for decryption."""
    spec = str(settings.backup_age_identity or "").strip()
    if not spec:
        raise UsageError(
            "this backup is encrypted with age and no identity is configured",
            hint="set MOVIE_BACKUP_AGE_IDENTITY to the key file (age-keygen's output)",
        )
    pyrage = _pyrage()
    try:
        lines = Path(spec).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the age identity file {spec}: {exc.strerror}") from None
    keys = [ln.strip() for ln in lines if ln.strip().startswith("AGE-SECRET-KEY-")]
    try:
        found = [pyrage.x25519.Identity.from_str(k) for k in keys]
    except Exception:
        raise UsageError(f"the age identity file {spec} holds a malformed key") from None
    if not found:
        raise UsageError(f"no AGE-SECRET-KEY line in the age identity file {spec}")
    return found


def decrypt_file(src: Path, dest: Path, keys: list[Any]) -> None:
    pyrage = _pyrage()
    try:
        with open(src, "rb") as fin, open(dest, "wb") as fout:
            pyrage.decrypt_io(fin, fout, keys)
    except pyrage.DecryptError:
        raise CheckFailed(
            f"cannot decrypt {src.name}: not one of its recipients' keys, or the object "
            "was altered",
            hint="check MOVIE_BACKUP_AGE_IDENTITY; do not restore an altered backup",
        ) from None
