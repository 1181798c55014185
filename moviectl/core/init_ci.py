"""`init ci`: a GitHub Actions workflow for the user's own repository.

The seed's "CI runs postgres + pytest" step, for a service that uses moviectl: PostgreSQL
as a service container (healthchecked, so the job starts once it accepts connections),
then `migrate`, `migrate check`, `migrate lint`, `migrate dump --check` when a
`schema.sql` is checked in, and the tests (the pytest plugin makes its test databases on
the same server). The connection is given to moviectl through MOVIE_* settings, so the
workflow holds no URL with a password in it but the throwaway container's.

Written to a temp file beside the target and renamed; an existing file is refused unless
``force`` (it may hold the user's edits).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from moviectl.infra.errors import UsageError
from moviectl.infra.files import write_user_file

DEFAULT_PATH = Path(".github/workflows/moviectl.yml")
PG_MAJORS = range(15, 19)  # what moviectl supports (docs: PostgreSQL 15-18)

_WORKFLOW = """\
# Written by `moviectl init ci`: PostgreSQL as a service container, the migrations
# (applied, compared with the models, linted, dumped), then the tests.
name: database

on:
  push:
  pull_request:

jobs:
  migrations-and-tests:
    runs-on: ubuntu-latest
    timeout-minutes: 30
    services:
      postgres:
        image: postgres:{major}
        env:
          POSTGRES_USER: movie
          POSTGRES_PASSWORD: movie-ci
          POSTGRES_DB: movies
        ports:
          - 5432:5432
        options: >-
          --health-cmd "pg_isready -U movie -d movies"
          --health-interval 2s
          --health-timeout 5s
          --health-retries 30
    env:
      MOVIE_DB_BACKEND: external
      MOVIE_DB_HOST: localhost
      MOVIE_DB_PORT: "5432"
      MOVIE_DB_USER: movie
      MOVIE_DB_PASSWORD: movie-ci
      MOVIE_DB_NAME: movies
    steps:
      - uses: actions/checkout@v4
      - uses: astral-sh/setup-uv@v6
        with:
          python-version: "{python}"
      - name: Install
        run: uv sync
      - name: Wait for PostgreSQL
        run: uv run moviectl db up --timeout 60
      - name: Migrate
        run: uv run moviectl migrate
      - name: Models and database agree
        run: uv run moviectl migrate check
      - name: Lint the migrations
        run: uv run moviectl migrate lint --range base:head
      - name: schema.sql is up to date
        if: hashFiles('{schema}') != ''
        run: uv run moviectl migrate dump --check --output {schema}
      - name: Tests
        run: uv run pytest
"""


@dataclass
class CiWorkflow:
    path: str
    postgres: str  # the service container's image
    replaced: bool  # an existing file was overwritten (--force)


def workflow_text(major: int = 16, python: str = "3.12", schema: str = "schema.sql") -> str:
    if major not in PG_MAJORS:
        raise UsageError(
            f"PostgreSQL {major} is not one moviectl supports",
            hint=f"one of {', '.join(map(str, PG_MAJORS))}",
        )
    return _WORKFLOW.format(major=major, python=python, schema=schema)


def write_workflow(
    path: Path = DEFAULT_PATH, *, major: int = 16, python: str = "3.12", force: bool = False
) -> CiWorkflow:
    text = workflow_text(major, python)
    existed = path.exists()
    if existed and not force:
        raise UsageError(
            f"{path} exists: refusing to overwrite it", hint="--force replaces it (review the diff)"
        )
    write_user_file(path, text.encode(), 0o644)
    return CiWorkflow(str(path), f"postgres:{major}", existed)
