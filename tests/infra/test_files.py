"""infra/files.py: the one atomic writer, on a real filesystem."""

from __future__ import annotations

import os
import stat

import pytest

from moviectl.infra.errors import ExitCode, MoviectlError
from moviectl.infra.files import write_atomically, write_json_atomic, write_user_file


def test_the_new_file_replaces_the_old_with_its_mode_whatever_the_umask(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    old = os.umask(0o077)
    try:
        write_atomically(path, b"new", 0o644)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f"]
    write_json_atomic(path, {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomically(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_a_path_the_operator_named_wrong_is_a_usage_error(tmp_path):
    write_user_file(tmp_path / "new" / "dir" / "f", b"x")  # directories made
    assert (tmp_path / "new" / "dir" / "f").read_bytes() == b"x"
    (tmp_path / "file").write_text("")
    with pytest.raises(MoviectlError) as err:
        write_user_file(tmp_path / "file" / "f", b"x")  # a file where a directory must be
    assert err.value.exit_code == ExitCode.USAGE and "cannot write" in str(err.value)
    (tmp_path / "adir").mkdir()
    with pytest.raises(MoviectlError) as err:
        write_user_file(tmp_path / "adir", b"x")  # a directory where the file must be
    assert err.value.exit_code == ExitCode.USAGE
    assert sorted(os.listdir(tmp_path)) == ["adir", "file", "new"]
