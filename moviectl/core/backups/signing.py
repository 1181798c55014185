"""Signed manifests: a forged backup is refused before anything is restored.

``MOVIE_BACKUP_SIGNING_KEY`` names an Ed25519 private key file (PEM, as ``openssl genpkey
-algorithm ed25519`` or ``moviectl backup keygen`` write it, or an unencrypted OpenSSH key
from ``ssh-keygen -t ed25519``), readable by its owner only. Every manifest moviectl
writes is then signed. ``MOVIE_BACKUP_VERIFY_KEY`` names a file of public keys (PEM
``PUBLIC KEY`` blocks and/or ``ssh-ed25519 …`` lines: several keys for a rotation) for
hosts that only restore; the signing key's own public key counts too.

With a key configured, ``restore``, ``backup verify`` and ``backup copy`` refuse, before
anything is downloaded or written, a manifest that is unsigned (exit 5), signed by
another key or altered since (exit 1), or that names another object than the one it sits
beside (exit 1). The checksum in the manifest then binds the backup itself. ``backup
list`` shows each manifest's state. Without a key nothing is checked (``signed`` only
says a signature is there).

The signature covers the manifest's canonical JSON (sorted keys, no spaces, ASCII)
without ``signature`` and the two fields a restore drill records afterwards
(``verified_at``, ``verify_result``): a host with only the public key can still verify.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from moviectl.infra.errors import CheckFailed, InputFileError, Refused, ToolMissing, UsageError
from moviectl.infra.files import open_regular

if TYPE_CHECKING:
    from moviectl.core.backups.objects import Repository
    from moviectl.infra.settings import Settings

MANIFEST = ".manifest.json"
UNSIGNED_FIELDS = ("signature", "verified_at", "verify_result")
ALGORITHM = "ed25519"
_MAX_KEY_FILE = 1 << 20  # a file of public keys is a few KB; more is a wrong path
_PEM_PUBLIC = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ToolMissing(
            "signed backup manifests need the cryptography package",
            hint="install moviectl with the sign extra: pip install 'moviectl[sign]'",
        ) from None
    return serialization


def payload(doc: dict[str, Any]) -> bytes:
    """What is signed: the manifest without its signature and drill outcome."""
    body = {k: v for k, v in doc.items() if k not in UNSIGNED_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def key_id(public: Any) -> str:
    """A public key's fingerprint (what the manifest and ``backup list`` name)."""
    serialization = _crypto()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _private_file(path: Path, what: str) -> bytes:
    # opened first, then checked through the descriptor: no swap between check and read
    try:
        fd = open_regular(path)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # a FIFO is never waited on
            raise UsageError(f"the {what} {path} is not a regular file") from None
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if st.st_mode & 0o077:
            raise UsageError(
                f"the {what} {path} is readable by others (mode {stat.S_IMODE(st.st_mode):04o})",
                hint=f"chmod 600 {path}",
            )
        if st.st_uid != os.geteuid():
            raise UsageError(
                f"the {what} {path} belongs to another user", hint="keep it owned by this user"
            )
        try:
            return fh.read(_MAX_KEY_FILE + 1)  # an oversized file is then no key (refused)
        except OSError as exc:
            raise UsageError(f"cannot read the {what} {path}: {exc.strerror}") from None


def signing_key(settings: Settings) -> Any | None:
    """The configured private key (None: manifests are not signed)."""
    spec = settings.backup_signing_key
    if spec is None or not str(spec).strip():
        return None
    path = Path(spec)
    data = _private_file(path, "signing key MOVIE_BACKUP_SIGNING_KEY")
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except Exception:  # never echo the file: it is a secret
        raise UsageError(
            f"the signing key {path} is not an unencrypted Ed25519 private key",
            hint="make one with `moviectl backup keygen FILE`",
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(
            f"the signing key {path} is not an Ed25519 key",
            hint="make one with `moviectl backup keygen FILE`",
        )
    return key


def verify_keys(settings: Settings) -> list[Any]:
    """The public keys a manifest may be signed by (empty: nothing is checked)."""
    keys = []
    own = signing_key(settings)
    if own is not None:
        keys.append(own.public_key())
    spec = settings.backup_verify_key
    if spec is not None and str(spec).strip():
        keys += _public_keys(Path(spec))
    return keys


def _public_keys(path: Path) -> list[Any]:
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    what = f"the verify key MOVIE_BACKUP_VERIFY_KEY {path}"
    try:  # one descriptor, checked then read: a FIFO or /dev/zero is never waited on
        with os.fdopen(open_regular(path), "rb") as fh:
            data = fh.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            raise UsageError(f"{what} is not a regular file") from None
        raise UsageError(f"cannot read {what}: {exc.strerror}") from None
    if len(data) > _MAX_KEY_FILE:
        raise UsageError(f"{what} is larger than {_MAX_KEY_FILE} bytes: not a key file")
    found = []
    try:
        for block in _PEM_PUBLIC.findall(data):
            found.append(serialization.load_pem_public_key(block))
        for line in data.splitlines():
            if line.strip().startswith(b"ssh-"):
                found.append(serialization.load_ssh_public_key(line.strip()))
    except Exception:
        raise UsageError(f"the verify key file {path} holds a malformed key") from None
    if not found or not all(isinstance(k, Ed25519PublicKey) for k in found):
        raise UsageError(
            f"the verify key file {path} holds no Ed25519 public key (or another kind)",
            hint="the .pub file `moviectl backup keygen` wrote, PEM or ssh-ed25519",
        )
    return found


def sign(key: Any | None, doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with its signature (unchanged without a key)."""
    if key is None:
        return doc
    value = key.sign(payload(doc))
    doc["signature"] = {
        "algorithm": ALGORITHM,
        "key": key_id(key.public_key()),
        "value": base64.b64encode(value).decode(),
    }
    return doc


def state(keys: list[Any], doc: dict[str, Any], name: str) -> str:
    """``ok`` | ``unsigned`` | ``bad`` | ``unknown key`` | ``wrong name`` with keys; without,
    ``signed`` or ``unsigned`` (unchecked)."""
    sig = doc.get("signature")
    if not isinstance(sig, dict):
        return "unsigned"
    if not keys:
        return "signed"
    if doc.get("file") != name:
        return "wrong name"
    by_id = {key_id(k): k for k in keys}
    key = by_id.get(str(sig.get("key")))
    if key is None or sig.get("algorithm") != ALGORITHM:
        return "unknown key"
    try:
        key.verify(base64.b64decode(str(sig.get("value")), validate=True), payload(doc))
    except Exception:  # InvalidSignature, or a value that is not base64
        return "bad"
    return "ok"


def check_backup(settings: Settings, repo: Repository, name: str) -> None:
    """Refuse ``name`` in ``repo`` unless a configured key signed its manifest (nothing is
    read without keys; a missing backup is left to the caller's "not found")."""
    keys = verify_keys(settings)
    if not keys or repo.stat(name) is None:
        return
    try:
        raw = json.loads(repo.read_bytes(name + MANIFEST))
    except (InputFileError, ValueError, UnicodeDecodeError, RecursionError):
        raw = None  # no manifest, or not JSON: not signed (an unreachable store raises)
    require(keys, raw if isinstance(raw, dict) else None, repo.where(name), name)


def require(keys: list[Any], doc: dict[str, Any] | None, where: str, name: str) -> None:
    """Refuse a manifest none of ``keys`` signed (no-op without keys)."""
    if not keys:
        return
    found = "unsigned" if doc is None else state(keys, doc, name)
    if found == "ok":
        return
    if found == "unsigned":
        raise Refused(
            f"{where} has no signed manifest and a verify key is configured: refusing it",
            hint="restore only backups signed by MOVIE_BACKUP_SIGNING_KEY; to take an unsigned "
            "one knowingly, run this command with MOVIE_BACKUP_VERIFY_KEY and "
            "MOVIE_BACKUP_SIGNING_KEY unset",
        )
    why = {
        "bad": "its signature does not match: the manifest was altered or forged",
        "unknown key": "it is signed by a key that is not configured",
        "wrong name": f"its manifest describes {doc.get('file') if doc else None!r}, not {name!r}",
    }[found]
    raise CheckFailed(
        f"{where}: {why}: refusing it",
        hint="do not restore it; use another backup (`moviectl backup list` shows signatures), "
        "or configure the key it was signed with in MOVIE_BACKUP_VERIFY_KEY",
    )


def keygen(path: Path) -> dict[str, str]:
    """A new Ed25519 key pair: ``path`` (private, 0600, never overwritten), ``path.pub``."""
    serialization = _crypto()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists() or p.is_symlink():
            raise UsageError(f"{p} already exists: not overwritten", hint="choose another name")
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    made_pub = False
    try:  # both files whole, or neither (a full disk leaves no half key)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private)
            fh.flush()
            os.fsync(fh.fileno())
        with open(pub_path, "xb") as pub:
            made_pub = True
            pub.write(public)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if made_pub:  # ours, half-written (a pre-existing one makes open fail first)
            pub_path.unlink(missing_ok=True)
        raise UsageError(f"cannot write the key pair {path}: {exc.strerror}") from None
    return {"signing_key": str(path), "verify_key": str(pub_path), "key": key_id(key.public_key())}
