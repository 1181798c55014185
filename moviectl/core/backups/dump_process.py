"""A running pg_dump: its stderr kept, its output size reported, killed and reaped as one
step; and what its failure means, as one ``MoviectlError``."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from moviectl.core.backups.fileio import Progress, size_of
from moviectl.infra.errors import MoviectlError
from moviectl.infra.pgtools import kill_group, popen_child

if TYPE_CHECKING:
    from moviectl.infra.conninfo import DbTarget


class DumpProcess:
    """A running pg_dump, its stderr kept in a temp file, its output size watched."""

    def __init__(
        self, argv: list[str], env: dict[str, str], tmp: Path, progress: Progress | None
    ) -> None:
        import tempfile

        self.err = tempfile.TemporaryFile()  # noqa: SIM115 (closed in wait)
        # pg_dump -j forks workers the kernel's parent-death signal does not reach: SIGTERM
        # makes pg_dump end them itself; its own group lets `kill` end them all at once
        self.proc = popen_child(
            argv,
            death_signal=signal.SIGTERM,
            own_group=True,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.err,
        )
        try:  # nothing between: a signal here must not leave pg_dump to nobody
            self.result: tuple[int, str] | None = None
            self.stop = threading.Event()
            self.watcher = threading.Thread(target=self._report, args=(tmp, progress), daemon=True)
            self.watcher.start()
        except BaseException:
            kill_group(self.proc)
            self.proc.wait()
            self.err.close()
            raise

    def _report(self, path: Path, progress: Progress | None) -> None:
        while not self.stop.wait(0.2):
            if progress:
                progress(size_of(path))

    def wait(self) -> tuple[int, str]:
        """(exit code, stderr), once pg_dump has exited; again and again after that."""
        if self.result is None:
            try:
                code = self.proc.wait()
            finally:
                self.stop.set()
                self.watcher.join()
            self.err.seek(0)
            self.result = code, self.err.read().decode(errors="replace")
            self.err.close()
        return self.result

    def kill(self) -> None:
        """Kill pg_dump and its workers (nothing, once it has exited and been waited for)."""
        kill_group(self.proc)
        self.wait()


def lock_wait_failed(stderr: str) -> bool:
    """Did pg_dump give up on a table lock? (``--lock-wait-timeout`` cancels its LOCK TABLE
    as a statement timeout; a parallel worker's NOWAIT lock says so in words)"""
    low = stderr.lower()
    if "statement timeout" in low and "lock table" in low:
        return True
    return "could not obtain lock on relation" in low or "due to lock timeout" in low


def dump_error(stderr: str, code: int, target: DbTarget) -> MoviectlError:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else f"pg_dump exited with {code}"
    if "No space left on device" in stderr:
        return MoviectlError(
            f"disk full while writing the backup: {last}",
            hint="free space or choose another --output; no partial file was kept",
        )
    if code < 0:
        return MoviectlError(f"pg_dump was killed (signal {-code}); no partial file was kept")
    from moviectl.infra.engine import translate_error

    # the cause is rarely pg_dump's last line ("Command was: COPY ..."): every line is
    # read for a condition (the server shutting down, a lost connection); none: the last
    err = translate_error(RuntimeError("\n".join(lines)), target)
    if type(err) is MoviectlError:
        err = translate_error(RuntimeError(last), target)
    err.message = f"pg_dump failed: {err.message}; no partial file was kept"
    return err
