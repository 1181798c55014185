"""A second `db upgrade --rollback` (or a `--finish`) while one rolls back: refused at once
naming the first's pid (exit 7), as a second `db upgrade` is, instead of waiting silently
on the cluster's lock. Real servers: PostgreSQL 16 → 18 by --method swap, then its rollback
held mid-restore (SIGSTOP) while the others are tried."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.core.test_upgrade_swap_rollback import (
    ROLLBACK,
    _left,
    _restoring_child,
    seeded,
    swapped,
)
from tests.core.upgrade_support import Site

pytestmark = pytest.mark.timeout(900)
__all__ = ["seeded", "swapped"]  # the fixtures, shared


def _refused_at_once(site: Site, *args: str) -> str:
    """``args`` run while the first rollback holds the lock: its exit and what it said,
    within 30 s (the old code waited on the cluster's lock, saying nothing)."""
    proc = site.start(*args)
    began = time.monotonic()
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"{args} waited silently on the lock; it said: {err!r}") from None
    said = " ".join(err.split())
    assert proc.returncode == 7, (proc.returncode, said)
    assert time.monotonic() - began < 20, "refused, but not at once"
    return said


def test_a_second_rollback_is_refused_at_once_naming_the_first(
    swapped: tuple[Site, tuple[str, int, str, str]],
) -> None:
    site, before = swapped
    first = site.start(*ROLLBACK)
    try:
        _restoring_child(first.pid)
        os.kill(first.pid, signal.SIGSTOP)  # held mid-restore, the lock with it
        try:
            for args in (ROLLBACK, ("db", "upgrade", "--finish", "--yes")):
                said = _refused_at_once(site, *args)
                assert f"pid {first.pid}" in said and "--rollback" in said, said
        finally:
            os.kill(first.pid, signal.SIGCONT)
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 0, err
    assert site.fingerprint() == before
    assert not _left(site.data)
