"""Migration files: how they are split and loaded, and that the DDL matches the Avro contracts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clickwire.clickhouse.migrations import MigrationError, load_migrations, migrations_dir, split_statements

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"


def test_statements_end_on_lines_ending_with_semicolon() -> None:
    """A `;` ending a line ends a statement; one inside a line or a comment line does not."""
    text = "-- header;\nCREATE TABLE a (s String DEFAULT ';')\nENGINE = Memory;\n\nSELECT 1;\nSELECT 2\n"
    assert split_statements(text) == [
        "-- header;\nCREATE TABLE a (s String DEFAULT ';')\nENGINE = Memory",
        "SELECT 1",
        "SELECT 2",
    ]


def test_trailing_comments_are_not_a_statement() -> None:
    """Comment lines after the last statement do not become an empty statement."""
    assert split_statements("SELECT 1;\n-- the end\n") == ["SELECT 1"]


def test_project_migrations_are_numbered_from_one_without_gaps() -> None:
    """Versions run 1, 2, 3, ... so the order of application is the order of the files."""
    versions = [migration.version for migration in load_migrations()]
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) >= 6


def test_project_ddl_is_idempotent() -> None:
    """Every project statement is a CREATE ... IF NOT EXISTS, so re-running a half-applied file is safe."""
    for migration in load_migrations():
        for statement in migration.statements:
            code = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--"))
            assert re.match(r"\s*CREATE\s+(\w+\s+)+IF NOT EXISTS\s", code), (migration.name, code[:80])


def _columns(table: str) -> list[str]:
    for migration in load_migrations():
        for statement in migration.statements:
            match = re.search(
                rf"CREATE TABLE IF NOT EXISTS clickwire\.{table}\s*\((.*?)\n\)", statement, re.DOTALL
            )
            if match:
                return re.findall(r"^\s+(\w+)\s", match.group(1), re.MULTILINE)
    raise AssertionError(f"no CREATE TABLE for {table}")


def _avro_fields(name: str) -> list[str]:
    schema = json.loads((AVRO_DIR / f"{name}.avsc").read_text())
    return [field["name"] for field in schema["fields"]]


@pytest.mark.parametrize(
    ("table", "schema", "extra"),
    [
        ("clicks", "enriched_click", []),
        ("links", "link", ["deleted"]),
        ("webhook_attempts", "webhook_attempt", []),
        ("dead_letters", "dead_letter", []),
    ],
)
def test_tables_have_the_avro_fields_in_order(table: str, schema: str, extra: list[str]) -> None:
    """Each table's columns are its Avro record's field names, in order, plus the documented extras."""
    assert _columns(table) == _avro_fields(schema) + extra


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    """Two files with one version number raise MigrationError naming both."""
    (tmp_path / "0001_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_b.sql").write_text("SELECT 2;\n")
    with pytest.raises(MigrationError, match="0001_a"):
        load_migrations(tmp_path)


@pytest.mark.parametrize("name", ["1_short.sql", "0001-dash.sql", "notes.sql"])
def test_misnamed_files_are_refused(tmp_path: Path, name: str) -> None:
    """A .sql file not named NNNN_name.sql is an error rather than silently skipped."""
    (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(MigrationError, match="NNNN_name"):
        load_migrations(tmp_path)


def test_file_without_statements_is_refused(tmp_path: Path) -> None:
    """A migration holding only comments is refused: it would be recorded without doing anything."""
    (tmp_path / "0001_empty.sql").write_text("-- nothing yet\n")
    with pytest.raises(MigrationError, match="no statement"):
        load_migrations(tmp_path)


def test_checksum_follows_the_file_bytes(tmp_path: Path) -> None:
    """Editing a file changes its checksum, which is how an edited applied migration is detected."""
    path = tmp_path / "0001_a.sql"
    path.write_text("SELECT 1;\n")
    [before] = load_migrations(tmp_path)
    path.write_text("SELECT 1; -- tweak\n")
    [after] = load_migrations(tmp_path)
    assert before.checksum != after.checksum
    assert migrations_dir().is_dir()
