"""`migrate lint`: every rule fires on its hazard and stays quiet on the safe rewrite; findings
point at the migration's file and line; a live database weighs them by the table's size;
acknowledgements, --json, exit codes and bad ranges through the real CLI.

Each test writes throwaway migrations (0003, ...) into a copy of the project's alembic/
and points MOVIE_MIGRATIONS_DIR at it.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import psycopg
import pytest

from moviectl.core.migrations.lint import TINY_ROWS, lint
from moviectl.core.migrations.lint_rules import RULES
from moviectl.infra.settings import load_settings
from tests.conftest import ROOT, Cli, copy_migrations

BLOCK = "with op.get_context().autocommit_block():"


@pytest.fixture
def scripts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the project's migration scripts, in use for this test."""
    copy = copy_migrations(tmp_path)
    monkeypatch.setenv("MOVIE_MIGRATIONS_DIR", str(copy))
    return copy


def write_migration(scripts: Path, body: str, rev: str = "0003", down: str = "0002") -> Path:
    path = scripts / "versions" / f"{rev}_change.py"
    path.write_text(
        f'"""change {rev}"""\n\nimport sqlalchemy as sa\nfrom alembic import op\n\n'
        f"revision = {rev!r}\ndown_revision = {down!r}\n\n\ndef upgrade() -> None:\n"
        + textwrap.indent(textwrap.dedent(body).strip(), "    ")
        + "\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    return path


def offline(range_: str = "0002:head") -> list:
    return lint(load_settings(use_dotenv=False), range_).findings  # type: ignore[call-arg]


NEW_TABLE = 'op.create_table("scratch", sa.Column("id", sa.Integer(), primary_key=True), sa.Column("n", sa.Integer()))\n'
ADD_FK_COLUMN = (
    'op.add_column("movies", sa.Column("seed_run_id", sa.BigInteger(), nullable=True))\n'
)

# rule -> (a migration that fires it, its safe rewrite that does not)
CASES: dict[str, tuple[str, str]] = {
    "index-not-concurrent": (
        'op.create_index("ix_movies_genre", "movies", ["genre"])  # <-',
        f'{BLOCK}\n    op.create_index("ix_movies_genre", "movies", ["genre"], postgresql_concurrently=True)\n'
        + NEW_TABLE
        + 'op.create_index("ix_scratch_n", "scratch", ["n"])',
    ),
    "concurrently-in-transaction": (
        'op.create_index("ix_movies_genre", "movies", ["genre"], postgresql_concurrently=True)  # <-',
        f'{BLOCK}\n    op.create_index("ix_movies_genre", "movies", ["genre"], postgresql_concurrently=True)',
    ),
    "constraint-builds-index": (
        'op.create_unique_constraint("uq_movies_title", "movies", ["title"])  # <-',
        f'{BLOCK}\n    op.create_index("uq_movies_title", "movies", ["title"], unique=True, postgresql_concurrently=True)\n'
        'op.execute("ALTER TABLE movies ADD CONSTRAINT uq_movies_title UNIQUE USING INDEX uq_movies_title")',
    ),
    "volatile-default": (
        'op.add_column("movies", sa.Column("public_id", sa.Uuid(), server_default=sa.text("gen_random_uuid()")))  # <-',
        'op.add_column("movies", sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.func.now()))\n'
        'op.add_column("movies", sa.Column("views", sa.Integer(), server_default="0", nullable=False))\n'
        'op.add_column("movies", sa.Column("public_id", sa.Uuid(), nullable=True))\n'
        'op.alter_column("movies", "public_id", server_default=sa.text("gen_random_uuid()"))',
    ),
    "set-not-null": (
        'op.alter_column("movies", "rating", nullable=False)  # <-',
        'op.create_check_constraint("ck_rating_nn", "movies", "rating IS NOT NULL", postgresql_not_valid=True)\n'
        f"{BLOCK}\n    pass\n"
        'op.execute("ALTER TABLE movies VALIDATE CONSTRAINT ck_rating_nn")\n'
        'op.alter_column("movies", "rating", nullable=False)',
    ),
    "column-type-change": (
        'op.alter_column("movies", "genre", type_=sa.String(80))  # <-',
        'op.alter_column("movies", "genre", server_default="drama")\n'
        + NEW_TABLE
        + 'op.alter_column("scratch", "n", type_=sa.BigInteger())',
    ),
    "fk-without-not-valid": (
        ADD_FK_COLUMN
        + 'op.create_foreign_key("fk_movies_seed", "movies", "seed_runs", ["seed_run_id"], ["id"])  # <-',
        ADD_FK_COLUMN
        + 'op.create_foreign_key("fk_movies_seed", "movies", "seed_runs", ["seed_run_id"], ["id"], postgresql_not_valid=True)\n'
        f"{BLOCK}\n    pass\n"
        'op.execute("ALTER TABLE movies VALIDATE CONSTRAINT fk_movies_seed")',
    ),
    "check-without-not-valid": (
        'op.create_check_constraint("ck_genre", "movies", "length(genre) > 0")  # <-',
        'op.create_check_constraint("ck_genre", "movies", "length(genre) > 0", postgresql_not_valid=True)',
    ),
    "drop-column": (
        'op.drop_column("movies", "rating")  # <-',
        NEW_TABLE + 'op.drop_column("scratch", "n")',
    ),
    "drop-table": (
        'op.drop_table("seed_runs")  # <-',
        NEW_TABLE + 'op.drop_table("scratch")',
    ),
    "rename-column": (
        'op.alter_column("movies", "genre", new_column_name="kind")  # <-',
        NEW_TABLE + 'op.alter_column("scratch", "n", new_column_name="m")',
    ),
    "rename-table": (
        'op.rename_table("seed_runs", "seed_log")  # <-',
        NEW_TABLE
        + 'op.rename_table("scratch", "scratch2")\nop.create_index("ix_s2", "scratch2", ["n"])',
    ),
    "syntax-error": ('op.execute("SELEC 1")  # <-', 'op.execute("SELECT 1")'),
}


def test_every_rule_has_a_firing_and_a_safe_case_and_a_readme_row():
    assert set(CASES) == set(RULES)
    section = (ROOT / "README.md").read_text().split("### Linting migrations (migrate lint)")[1]
    table = section.split("\n\n|", 1)[1].split("\n\n", 1)[0]
    assert sorted(set(re.findall(r"`([a-z-]+)`", table)) & set(RULES)) == sorted(RULES)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires_on_the_hazard_at_its_line(scripts, rule):
    path = write_migration(scripts, CASES[rule][0])
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if "# <-" in t)
    findings = offline()
    assert [(f.rule, f.line, f.revision, f.severity) for f in findings] == [
        (rule, line, "0003", "error")
    ], findings
    f = findings[0]
    assert Path(f.file).resolve() == path.resolve()
    assert f.why == RULES[rule].why and f.fix == RULES[rule].fix and f.statement
    assert f.weight in ("size unknown (offline)", "not weighed")


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_is_quiet_on_the_safe_rewrite(scripts, rule):
    write_migration(scripts, CASES[rule][1])
    assert offline() == []


def test_the_projects_own_migrations_lint_clean():
    for range_ in ("base:head", "0001:head", "base:0001"):
        assert offline(range_) == []


def test_a_validate_in_the_transaction_that_added_not_valid_gains_nothing(scripts):
    path = write_migration(
        scripts,
        """
        op.create_check_constraint("ck_genre", "movies", "length(genre) > 0", postgresql_not_valid=True)
        op.execute("ALTER TABLE movies VALIDATE CONSTRAINT ck_genre")  # <-
        """,
    )
    (finding,) = offline()
    assert finding.rule == "check-without-not-valid"
    assert "transaction that added it NOT VALID" in finding.message
    assert path.read_text().splitlines()[finding.line - 1].endswith("# <-")


def test_findings_map_to_each_migration_and_multiline_calls_to_their_first_line(scripts):
    write_migration(scripts, 'op.drop_column("movies", "rating")')
    second = write_migration(
        scripts,
        """
        op.execute("SELECT 1")
        op.create_index(  # <-
            "ix_movies_genre",
            "movies",
            ["genre"],
        )
        """,
        rev="0004",
        down="0003",
    )
    findings = offline()
    assert [(f.revision, f.rule) for f in findings] == [
        ("0003", "drop-column"),
        ("0004", "index-not-concurrent"),
    ]
    assert second.read_text().splitlines()[findings[1].line - 1].endswith("# <-")
    assert [(f.revision, f.rule) for f in offline("0003:0004")] == [
        ("0004", "index-not-concurrent")
    ]


def test_acknowledgements_need_the_rule_and_a_reason(scripts):
    write_migration(
        scripts,
        """
        # moviectl-lint: allow drop-column -- 0.9 stopped reading movies.rating
        op.drop_column("movies", "rating")
        op.drop_table("seed_runs")  # moviectl-lint: allow drop-table, rename-table -- unused since 0.8
        # moviectl-lint: allow drop-column -- another rule
        op.alter_column("movies", "genre", new_column_name="kind")
        op.alter_column("movies", "title", new_column_name="name")  # moviectl-lint: allow rename-column
        """,
    )
    findings = offline()
    assert [(f.rule, f.acknowledged, f.reason) for f in findings] == [
        ("drop-column", True, "0.9 stopped reading movies.rating"),
        ("drop-table", True, "unused since 0.8"),
        ("rename-column", False, None),  # the comment above allows another rule
        ("rename-column", False, None),
    ]
    assert "needs `-- <reason>`" in findings[3].message


def test_acknowledged_findings_do_not_fail_the_cli(scripts):
    write_migration(
        scripts, 'op.drop_column("movies", "rating")  # moviectl-lint: allow drop-column -- gone'
    )
    r = Cli({"MOVIE_DB_PORT": "1"})("migrate", "lint", "--range", "0002:head")
    assert r.exit_code == 0, r.output
    assert "acknowledged" in r.stdout and "drop-column" in r.stdout and "gone" in r.stdout


def test_offline_json_document_and_exit_code(scripts):
    write_migration(scripts, 'op.create_index("ix_movies_genre", "movies", ["genre"])')
    cli = Cli({"MOVIE_DB_PORT": "1"})
    r = cli("--json", "migrate", "lint", "--range", "base:head")
    assert r.exit_code == 0, r.output  # movies is created in that range: new, so empty
    assert json.loads(r.stdout)["findings"] == []
    r = cli("--json", "migrate", "lint", "--range", "0001:head")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc["range"] == "0001:0003" and doc["mode"] == "offline" and doc["database"] is None
    assert doc["migrations"] == ["0002", "0003"]
    assert (doc["errors"], doc["warnings"], doc["ok"]) == (1, 0, False)
    (f,) = doc["findings"]
    assert set(f) == {
        "rule",
        "severity",
        "revision",
        "file",
        "line",
        "statement",
        "message",
        "table",
        "rows",
        "bytes",
        "weight",
        "why",
        "fix",
        "acknowledged",
        "reason",
    }
    assert (f["rule"], f["table"], f["rows"], f["bytes"]) == (
        "index-not-concurrent",
        "movies",
        None,
        None,
    )
    assert f["statement"] == "CREATE INDEX ix_movies_genre ON movies (genre)"


def test_without_a_database_the_default_lints_everything_offline(scripts):
    r = Cli({"MOVIE_DB_PORT": "1"})("migrate", "lint")
    assert r.exit_code == 0, r.output
    assert "no hazards found" in r.stdout and "offline" in r.stdout
    write_migration(
        scripts,
        """
        op.alter_column("movies", "rating", nullable=False)
        op.create_index("ix_movies_genre", "movies", ["genre"], postgresql_concurrently=True)
        """,
    )
    r = Cli({"MOVIE_DB_PORT": "1"})("--json", "migrate", "lint")
    doc = json.loads(r.stdout)
    assert r.exit_code == 1 and doc["mode"] == "offline" and "no database" in doc["note"]
    assert doc["range"] == "base:0003" and "--range" in doc["note"]
    # base:head: every table is created in the range (new), only what fails regardless is left
    assert [f["rule"] for f in doc["findings"]] == ["concurrently-in-transaction"]


@pytest.mark.parametrize(
    ("range_", "says"),
    [
        ("nope:head", "unknown revision 'nope'"),
        ("0002", "is not A:B"),
        (":head", "is not A:B"),
        ("0002:0001", "0002 is not before 0001"),
        ("head:base", "ends at base"),
    ],
)
def test_a_bad_range_is_one_line_and_exit_2(range_, says):
    cli = Cli({"MOVIE_DB_PORT": "1"})
    r = cli("migrate", "lint", "--range", range_)
    assert r.exit_code == 2, r.output
    assert says in r.stderr and r.stdout == "" and "Traceback" not in r.output
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1
    r = cli("--json", "migrate", "lint", "--range", range_)
    assert r.exit_code == 2 and json.loads(r.stdout)["exit_code"] == 2


# With a database: the pending migrations, weighed by the live table's size


def test_an_up_to_date_database_has_nothing_pending(cli):
    r = cli("--json", "migrate", "lint")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["mode"] == "database" and doc["findings"] == [] and doc["migrations"] == []
    assert "no pending migrations" in doc["note"]


def _lint_json(cli: Cli) -> tuple[int, dict]:
    r = cli("--json", "migrate", "lint")
    return r.exit_code, json.loads(r.stdout)


def test_an_index_on_an_empty_table_is_info_on_a_small_one_a_warning_on_a_big_one_an_error(
    cli, movie_db_url, scripts
):
    write_migration(scripts, 'op.create_index("ix_movies_genre", "movies", ["genre"])')
    code, doc = _lint_json(cli)
    assert doc["mode"] == "database" and doc["range"] == "0002:0003"
    assert doc["migrations"] == ["0003"]
    (f,) = doc["findings"]
    assert code == 0 and (f["severity"], f["rows"], f["weight"]) == ("info", 0, "empty table")
    assert f["bytes"] > 0

    insert = "INSERT INTO movies (title, year, genre) SELECT 'm' || g, 2000, 'drama' FROM generate_series(1, %s) g"
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(insert, (5,))
    code, doc = _lint_json(cli)
    assert code == 0 and (doc["findings"][0]["severity"], doc["findings"][0]["rows"]) == (
        "warning",
        5,
    )
    r = cli("migrate", "lint")
    assert "movies: 5 rows" in r.stdout and "small table" in r.stdout

    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(insert, (TINY_ROWS,))
    code, doc = _lint_json(cli)
    assert code == 1 and doc["findings"][0]["severity"] == "error"
    assert doc["findings"][0]["rows"] > TINY_ROWS and doc["errors"] == 1
    r = cli("migrate", "lint")
    assert (
        r.exit_code == 1
        and "large table" in r.stdout
        and "postgresql_concurrently=True" in r.stdout
    )


def test_code_breaking_rules_are_errors_whatever_the_size(cli, scripts):
    write_migration(scripts, 'op.drop_column("movies", "rating")')
    code, doc = _lint_json(cli)
    assert code == 1
    assert [(f["rule"], f["severity"], f["weight"]) for f in doc["findings"]] == [
        ("drop-column", "error", "not weighed")
    ]


def test_the_database_answers_volatility_and_validated_checks(cli, movie_db_url, scripts):
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION new_token() RETURNS text LANGUAGE sql VOLATILE AS $$ SELECT md5(random()::text) $$"
        )
        conn.execute(
            "CREATE FUNCTION fixed_token() RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT 'x' $$"
        )
        conn.execute("ALTER TABLE movies ADD CONSTRAINT ck_rating_nn CHECK (rating IS NOT NULL)")
        conn.execute(
            "ALTER TABLE seed_runs ADD CONSTRAINT ck_error_nn CHECK (error IS NOT NULL) NOT VALID"
        )
    write_migration(
        scripts,
        """
        op.add_column("movies", sa.Column("token", sa.Text(), server_default=sa.text("new_token()")))
        op.add_column("movies", sa.Column("fixed", sa.Text(), server_default=sa.text("fixed_token()")))
        op.alter_column("movies", "rating", nullable=False)
        op.alter_column("seed_runs", "error", nullable=False)
        """,
    )
    _, doc = _lint_json(cli)
    assert [(f["rule"], f["message"]) for f in doc["findings"]] == [
        ("volatile-default", "ADD COLUMN token DEFAULT new_token() (volatile)"),
        ("set-not-null", "ALTER COLUMN error SET NOT NULL"),  # its check is not validated
    ]
    # offline, a function the linter does not know is not assumed volatile
    assert [f.rule for f in offline()] == ["set-not-null", "set-not-null"]


def test_an_unknown_database_revision_is_a_clear_error(cli, movie_db_url):
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")
    r = cli("migrate", "lint")
    assert r.exit_code == 2 and "'9999'" in r.stderr and "Traceback" not in r.output


def test_the_size_is_inspects_and_a_locked_table_is_weighed_without_waiting(
    cli, movie_db_url, scripts
):
    """lint weighs by `inspect total-sizes`' live size; a table someone holds ACCESS
    EXCLUSIVE on is weighed from the catalog (never queued behind) and the finding says so."""
    write_migration(scripts, 'op.create_index("ix_movies_genre", "movies", ["genre"])')
    with psycopg.connect(movie_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO movies (title, year, genre) "
            "SELECT 'm' || g, 2000, 'drama' FROM generate_series(1, 50) g"
        )
    _, doc = _lint_json(cli)
    (f,) = doc["findings"]
    totals = json.loads(cli("--json", "inspect", "total-sizes").stdout)["rows"]
    assert f["bytes"] == next(r["size"] for r in totals if r["table"] == "movies")
    assert (f["rows"], f["weight"]) == (50, "small table") and "locked" not in f["message"]

    holder = psycopg.connect(movie_db_url)
    try:
        holder.execute("LOCK TABLE movies IN ACCESS EXCLUSIVE MODE")
        _, doc = _lint_json(cli)  # pytest-timeout fails it if lint queued behind the lock
    finally:
        holder.close()
    (f,) = doc["findings"]
    assert f["bytes"] > 0 and "ACCESS EXCLUSIVE lock right now" in f["message"]
    # never analysed, so its rows could only be counted, and counting would wait
    assert (f["severity"], f["weight"]) == ("error", "row count unknown (the table is locked now)")
