"""Signed manifests (issue 27): a forged, re-signed or unsigned backup is refused before
anything is restored, in a directory and in a real S3-compatible bucket (SeaweedFS); keys
made by openssl and ssh-keygen, and signatures openssl checks (the real other clients)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from moviectl.core.backups.signing import payload
from tests.conftest import Cli
from tests.core.s3server import SECRET_KEY, SeaweedS3


def keygen(tmp_path: Path, name: str = "sign.key") -> tuple[Path, Path]:
    r = Cli({})("backup", "keygen", str(tmp_path / name), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    key, pub = Path(doc["signing_key"]), Path(doc["verify_key"])
    assert key.read_text() not in r.output  # the secret never shows
    return key, pub


def databases(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT datname FROM pg_database")}


def test_keygen_makes_a_private_key_and_never_overwrites(tmp_path):
    key, pub = keygen(tmp_path)
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    r = Cli({})("backup", "keygen", str(key))
    assert r.exit_code == 2 and "already exists" in r.stderr
    assert key.read_bytes() == before
    # openssl reads both (the real other client)
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True, check=True
    )
    assert out.stdout == pub.read_bytes()


@pytest.fixture
def seeded(cli):
    r = cli("seed", "--sample", "200")
    assert r.exit_code == 0, r.output
    return cli


def test_a_key_others_can_read_is_refused_before_anything_is_written(seeded, tmp_path):
    key, _ = keygen(tmp_path)
    key.chmod(0o644)
    out = tmp_path / "out"
    out.mkdir()
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 2 and "chmod 600" in r.stderr and len(r.stderr.splitlines()) <= 2
    assert key.read_text() not in r.output
    assert list(out.iterdir()) == []
    key.chmod(0o600)
    key.write_text("not a key\n")
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 2 and "not an unencrypted Ed25519 private key" in r.stderr
    assert list(out.iterdir()) == []
    locked = tmp_path / "locked"  # a passphrase moviectl cannot ask for
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "a passphrase", "-f", str(locked)]
    subprocess.run(argv, check=True)
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(locked))
    assert r.exit_code == 2 and "not an unencrypted Ed25519 private key" in r.stderr
    assert list(out.iterdir()) == []
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(fifo))
    assert r.exit_code == 2 and "not a regular file" in r.stderr
    rsa = tmp_path / "rsa"  # a valid private key, of the wrong kind
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", str(rsa)], check=True)
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(rsa))
    assert r.exit_code == 2 and "is not an Ed25519 key" in r.stderr
    assert rsa.read_text() not in r.output
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away takes root")
def test_a_key_owned_by_another_user_is_refused(seeded, tmp_path):
    key, _ = keygen(tmp_path)
    os.chown(key, 65534, 65534)  # nobody: 0600 and readable by root, but not this user's
    out = tmp_path / "out"
    out.mkdir()
    r = seeded("backup", "--output", str(out), MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 2 and "belongs to another user" in r.stderr, r.output
    assert list(out.iterdir()) == []


def test_signed_local_backup_forged_resigned_unsigned(seeded, tmp_path, movie_db_url):
    key, pub = keygen(tmp_path)
    r = seeded("backup", "--output", str(tmp_path), "--json", MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    path, mpath = Path(doc["path"]), Path(doc["manifest_path"])
    man = json.loads(mpath.read_text())
    assert man["signature"]["algorithm"] == "ed25519"
    verify_only = {"MOVIE_BACKUP_VERIFY_KEY": str(pub)}

    r = seeded("backup", "list", "--dir", str(tmp_path), "--json", **verify_only)
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["ok"]
    r = seeded("backup", "list", "--dir", str(tmp_path), "--json")  # no key: not checked
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["signed"]

    # a restore host with only the public key: the drill passes and keeps the signature
    r = seeded("backup", "verify", str(path), "--json", **verify_only)
    assert r.exit_code == 0, r.output
    after = json.loads(mpath.read_text())
    assert after["verified_at"] and after["signature"] == man["signature"]
    r = seeded("backup", "list", "--dir", str(tmp_path), **verify_only)
    assert "ok" in r.stdout and "signature" in r.stdout

    # forged: another dump under the name, its checksum fixed in the manifest
    pristine = path.read_bytes(), mpath.read_text()
    with open(path, "ab") as fh:
        fh.write(b"\0")
    forged = dict(after, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    mpath.write_text(json.dumps(forged))
    before = databases(movie_db_url)
    for args in (("restore", str(path), "--into", "never_forged"), ("backup", "verify", str(path))):
        r = seeded(*args, **verify_only)
        assert r.exit_code == 1, r.output
        assert "signature does not match" in r.stderr and len(r.stderr.splitlines()) <= 2
    assert databases(movie_db_url) == before
    assert json.loads(mpath.read_text()) == forged  # the refused drill recorded nothing
    r = seeded("backup", "list", "--dir", str(tmp_path), "--json", **verify_only)
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["bad"]

    # put back: it verifies again (the forgery left nothing behind)
    path.write_bytes(pristine[0])
    mpath.write_text(pristine[1])
    r = seeded("backup", "verify", str(path), "--json", **verify_only)
    assert r.exit_code == 0, r.output


def test_resigned_and_unsigned_manifests_are_refused(seeded, tmp_path, movie_db_url):
    _, pub = keygen(tmp_path)
    other, _ = keygen(tmp_path, "other.key")
    r = seeded("backup", "--output", str(tmp_path), "--json", MOVIE_BACKUP_SIGNING_KEY=str(other))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    path = Path(doc["path"])
    before = databases(movie_db_url)
    r = seeded("restore", str(path), "--into", "never_resigned", MOVIE_BACKUP_VERIFY_KEY=str(pub))
    assert r.exit_code == 1 and "signed by a key that is not configured" in r.stderr
    # unsigned (made without a key) with a verify key: refused, exit 5
    r = seeded("backup", "--output", str(tmp_path), "--json")
    unsigned = Path(json.loads(r.stdout)["path"])
    r = seeded(
        "restore", str(unsigned), "--into", "never_unsigned", MOVIE_BACKUP_VERIFY_KEY=str(pub)
    )
    assert r.exit_code == 5 and "no signed manifest" in r.stderr
    # a manifest moved beside another backup: it names another file
    shutil.copy(Path(doc["manifest_path"]), unsigned.with_name(unsigned.name + ".manifest.json"))
    r = seeded("backup", "verify", str(unsigned), MOVIE_BACKUP_SIGNING_KEY=str(other))
    assert r.exit_code == 1 and "describes" in r.stderr
    r = seeded(
        "restore", str(path), "--into", "never_resigned", "--json", MOVIE_BACKUP_VERIFY_KEY=str(pub)
    )
    err = json.loads(r.stdout)
    assert r.exit_code == 1 and err["exit_code"] == 1 and err["error"] == "CheckFailed"
    assert databases(movie_db_url) == before


def test_an_openssh_key_signs_and_its_pub_line_verifies(seeded, tmp_path):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen is not installed")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    out = tmp_path / "out"
    out.mkdir()
    r = seeded("backup", "--output", str(out), "--json", MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    pub = tmp_path / "id_ed25519.pub"
    r = seeded("backup", "list", "--dir", str(out), "--json", MOVIE_BACKUP_VERIFY_KEY=str(pub))
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["ok"]
    assert doc["path"]


# ---- in a bucket ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    yield server
    server.stop()


def test_signed_backup_in_a_bucket(seeded, s3, tmp_path, movie_db_url):
    # a key openssl made (the real other client), and its public half
    key, pub = tmp_path / "k.pem", tmp_path / "k.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(key)], check=True)
    key.chmod(0o600)
    subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-out", str(pub)], check=True)
    staging = tmp_path / "staging"
    seeded.env.update(s3.env(MOVIE_BACKUP_DIR=str(staging)))
    prefix = f"signed-{tmp_path.name}"
    repo = f"s3://backups/{prefix}"
    r = seeded("backup", "--to", repo, "--json", MOVIE_BACKUP_SIGNING_KEY=str(key))
    assert r.exit_code == 0, r.output
    assert SECRET_KEY not in r.output
    name = json.loads(r.stdout)["path"].rsplit("/", 1)[1]
    mkey = f"{prefix}/{name}.manifest.json"
    man = json.loads(s3.read(mkey))

    # openssl checks the signature over the documented payload
    (tmp_path / "payload").write_bytes(payload(man))
    (tmp_path / "sig").write_bytes(base64.b64decode(man["signature"]["value"]))
    argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pub), "-rawin"]
    argv += ["-in", str(tmp_path / "payload"), "-sigfile", str(tmp_path / "sig")]
    subprocess.run(argv, check=True, capture_output=True)

    verify_only = {"MOVIE_BACKUP_VERIFY_KEY": str(pub)}
    r = seeded("backup", "list", "--repo", repo, "--json", **verify_only)
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["ok"]
    r = seeded("backup", "verify", name, "--repo", repo, "--json", **verify_only)
    assert r.exit_code == 0, r.output
    assert json.loads(s3.read(mkey))["signature"] == man["signature"]

    # a copy keeps the signature: the directory lists it as signed by the same key
    r = seeded("backup", "copy", name, "--repo", repo, "--to", str(tmp_path / "c2"), **verify_only)
    assert r.exit_code == 0, r.output
    r = seeded("backup", "list", "--dir", str(tmp_path / "c2"), "--json", **verify_only)
    assert [b["signature"] for b in json.loads(r.stdout)["backups"]] == ["ok"]

    forged = dict(json.loads(s3.read(mkey)))
    forged["row_counts"] = {**forged["row_counts"], "movies": 1}
    s3.write(mkey, json.dumps(forged).encode())
    before = databases(movie_db_url)
    r = seeded("restore", f"{repo}/{name}", "--into", "never_forged_s3", **verify_only)
    assert r.exit_code == 1 and "signature does not match" in r.stderr
    r = seeded("backup", "verify", name, "--repo", repo, **verify_only)
    assert r.exit_code == 1 and "signature does not match" in r.stderr
    assert json.loads(s3.read(mkey)) == forged  # nothing recorded
    assert databases(movie_db_url) == before
    assert not staging.exists() or not list(staging.iterdir())  # nothing downloaded
    r = seeded("backup", "copy", name, "--repo", repo, "--to", str(tmp_path / "c"), **verify_only)
    assert r.exit_code == 1 and not (tmp_path / "c" / name).exists()


def test_a_verify_key_that_is_no_regular_file_is_one_line(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        r = Cli({"MOVIE_BACKUP_VERIFY_KEY": str(path)})("backup", "list", "--json")
        assert r.exit_code == 2, r.output  # not a hang on the read
        doc = json.loads(r.stdout)
        assert doc["error"] == "UsageError" and str(path) in doc["message"]
