"""Every setting, fed every class of hostile value (issue 26 item 8): each is either taken as
a valid value or refused with one ConfigError (exit 2) that names the variable and where it
was set, never the value; nothing else escapes (no traceback, no internal error)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from moviectl.infra.errors import ConfigError
from moviectl.infra.settings import SETTING_FIELDS, key_of, load_settings
from tests.conftest import subprocess_env

HOSTILE = [
    "",
    " ",
    "\u00b2",  # a superscript digit: str.isdigit() says yes
    "\uff15\uff14\uff13\uff12",  # full-width digits: int() takes them
    "\u0665",  # an Arabic-Indic digit
    "9" * 5000,  # more digits than int() converts
    "-1",
    "0",
    "1e308",
    "-1e308",
    "inf",
    "-inf",
    "nan",
    "0x10",
    "1_000",
    "h" * 300,
    "a\tb",
    "a\x1b[31mb",
    "\udcff",  # a byte that is not UTF-8, as os.environ holds it
    "postgresql://u:p%00w@h/d",
    "postgresql://u:p%zzw@h/d",
    "postgresql://u:SEKRIT@h:0/d",
    "postgresql://u:SEKRIT@h/d?sslmode=nope",
    "postgresql://u:SEKRIT@h/d?bogus=1",
    "host=h password='SEKRIT",
    "TRUE",
    "Docker",
]


@pytest.mark.parametrize("name", list(SETTING_FIELDS))
def test_every_hostile_value_is_taken_or_refused_in_one_line(monkeypatch, tmp_path, name):
    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.upper().startswith("MOVIE_")]:
        monkeypatch.delenv(key)
    for value in HOSTILE:
        monkeypatch.setenv(key_of(name), value)
        try:
            load_settings()
        except ConfigError as exc:
            assert exc.exit_code == 2
            assert key_of(name) in exc.message or "MOVIE_DATABASE_URL" in exc.message, (
                value,
                exc.message,
            )
            assert "\n" not in exc.message
            if len(value) > 3:
                assert value not in exc.message and "SEKRIT" not in exc.message, exc.message


@pytest.mark.parametrize(
    "value", ["\uff15\uff14\uff13\uff12", "9" * 5000, "inf", "postgresql://u:SEKRIT@h/d?x=1"]
)
def test_through_the_console_script_one_json_document_and_exit_2(tmp_path, value):
    for key in ("MOVIE_DB_PORT", "MOVIE_CONNECT_TIMEOUT", "MOVIE_DATABASE_URL"):
        res = subprocess.run(
            [sys.executable, "-m", "moviectl", "--json", "config", "show"],
            env=subprocess_env(**{key: value}),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if key == "MOVIE_DATABASE_URL" and "://" not in value:
            assert res.returncode == 2 and json.loads(res.stdout)["exit_code"] == 2
            continue
        if res.returncode == 0:  # taken as valid
            continue
        assert res.returncode == 2, res.stderr
        assert json.loads(res.stdout)["exit_code"] == 2
        assert "Traceback" not in res.stderr and "SEKRIT" not in res.stdout + res.stderr
