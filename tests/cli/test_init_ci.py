"""`moviectl init ci`: the GitHub Actions workflow it writes is valid YAML of the shape
GitHub runs (checked with actionlint where it is installed), wires the service
container's credentials into MOVIE_* and runs the schema checks and the tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.conftest import Cli

WORKFLOW = Path(".github/workflows/moviectl.yml")


def test_the_workflow_runs_postgres_the_migrations_and_the_tests(tmp_path):
    r = Cli()("--json", "init", "ci")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc == {"path": str(WORKFLOW), "postgres": "postgres:16", "replaced": False}
    flow = yaml.safe_load((tmp_path / WORKFLOW).read_text())
    assert set(flow[True]) == {"push", "pull_request"}  # YAML 1.1 reads `on` as true
    (job,) = flow["jobs"].values()
    pg = job["services"]["postgres"]
    assert pg["image"] == "postgres:16" and "--health-cmd" in pg["options"]
    assert pg["ports"] == ["5432:5432"]
    env = job["env"]
    assert env["MOVIE_DB_BACKEND"] == "external"
    assert env["MOVIE_DB_USER"] == pg["env"]["POSTGRES_USER"]
    assert env["MOVIE_DB_PASSWORD"] == pg["env"]["POSTGRES_PASSWORD"]
    assert env["MOVIE_DB_NAME"] == pg["env"]["POSTGRES_DB"]
    runs = [step.get("run", "") for step in job["steps"]]
    for command in (
        "uv run moviectl migrate",
        "uv run moviectl migrate check",
        "uv run moviectl migrate lint --range base:head",
        "uv run moviectl migrate dump --check --output schema.sql",
        "uv run pytest",
    ):
        assert command in runs, command
    assert runs.index("uv run moviectl migrate") < runs.index("uv run pytest")
    for step in job["steps"]:
        if "uses" in step:
            assert "@v" in step["uses"], step  # pinned to a major
    # every setting the workflow sets is one moviectl reads
    r = Cli(env)("--json", "config", "show")
    shown = {row["key"]: row for row in json.loads(r.stdout)["settings"]}
    for key in env:
        assert key in shown and shown[key]["source"] != "default", key
    actionlint = shutil.which("actionlint")
    if actionlint:
        res = subprocess.run([actionlint, str(tmp_path / WORKFLOW)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


def test_an_existing_workflow_is_kept_unless_forced(tmp_path):
    (tmp_path / WORKFLOW).parent.mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text("# mine\n")
    r = Cli()("--json", "init", "ci")
    assert r.exit_code == 2 and "--force" in json.loads(r.stdout)["hint"]
    assert (tmp_path / WORKFLOW).read_text() == "# mine\n"
    r = Cli()("--json", "init", "ci", "--force", "--postgres", "18")
    assert r.exit_code == 0 and json.loads(r.stdout)["replaced"] is True
    assert "image: postgres:18" in (tmp_path / WORKFLOW).read_text()
    r = Cli()("--json", "init", "ci", "--force", "--postgres", "12")
    assert r.exit_code == 2, r.output
    assert "image: postgres:18" in (tmp_path / WORKFLOW).read_text()
