"""Numbered schema migrations in schemas/clickhouse, applied in order and exactly once.

A migration is a file `NNNN_name.sql` (NNNN its version). It holds one or more statements; a
statement ends on a line whose last character is `;` (comment lines never end one). Statements are
written to be idempotent (CREATE ... IF NOT EXISTS), so a migration interrupted half-way is simply
applied again. The DDL is plain ClickHouse SQL that runs the same on chdb and on a server.

Each applied migration is recorded in `<database>.schema_migrations` (version, name, sha256 of the
file, applied_at). A re-run applies nothing; editing an applied file raises MigrationError, because
the change would silently never reach databases that already ran it: add a new migration instead.
Two processes migrating the same server at once may both run a file; the statements are idempotent
and the ledger keeps one row per version (ReplacingMergeTree, read with FINAL).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clickwire.clickhouse.store import ClickHouseError, ClickHouseStore

DATABASE = "clickwire"
_DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FILE_NAME = re.compile(r"(\d{4})_[A-Za-z0-9_]+\.sql")


class MigrationError(ClickHouseError):
    """The migrations on disk disagree with the ones recorded as applied, or a file is malformed."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name (file stem), statements and checksum."""

    version: int
    name: str
    statements: tuple[str, ...]
    checksum: str


def migrations_dir() -> Path:
    """The directory holding clickwire's own migrations (schemas/clickhouse)."""
    return Path(__file__).resolve().parents[2] / "schemas" / "clickhouse"


def split_statements(text: str) -> list[str]:
    """Split a migration into statements, each ending on a line whose last character is `;`."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        current.append(line)
        stripped = line.strip()
        if stripped.endswith(";") and not stripped.startswith("--"):
            statements.append("\n".join(current).strip().removesuffix(";").rstrip())
            current = []
    rest = "\n".join(current).strip()
    if any(line.strip() and not line.strip().startswith("--") for line in rest.splitlines()):
        statements.append(rest)
    return statements


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Read every NNNN_name.sql in directory, ordered by version; MigrationError on duplicates."""
    found: dict[int, Migration] = {}
    for path in sorted((directory or migrations_dir()).glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        raw = path.read_bytes()
        migration = Migration(
            version=int(match.group(1)),
            name=path.stem,
            statements=tuple(split_statements(raw.decode("utf-8"))),
            checksum=hashlib.sha256(raw).hexdigest(),
        )
        if migration.version in found:
            raise MigrationError(
                f"{path.name} and {found[migration.version].name} share version {migration.version}"
            )
        if not migration.statements:
            raise MigrationError(f"{path.name} holds no statement")
        found[migration.version] = migration
    return [found[version] for version in sorted(found)]


async def _ledger(store: ClickHouseStore, database: str) -> dict[int, tuple[str, str]]:
    if not _DATABASE_NAME.fullmatch(database):
        raise ValueError(f"not a plain database name: {database!r}")
    await store.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    await store.command(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations"
        " (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC'))"
        " ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
    )
    # database was checked to be a bare identifier above.
    ledger_sql = f"SELECT version, name, checksum FROM {database}.schema_migrations FINAL"  # noqa: S608
    rows = await store.query(ledger_sql)
    return {int(row["version"]): (str(row["name"]), str(row["checksum"])) for row in rows}


def _check_unchanged(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded[1] != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was applied as {recorded[0]} with checksum {recorded[1][:12]}"
                f" but the file now has {migration.checksum[:12]}: applied migrations must not be edited,"
                " add a new migration instead"
            )


async def pending_migrations(
    store: ClickHouseStore, directory: Path | None = None, *, database: str = DATABASE
) -> list[str]:
    """Names of the migrations not applied yet; MigrationError if an applied one was edited."""
    migrations = load_migrations(directory)
    applied = await _ledger(store, database)
    _check_unchanged(migrations, applied)
    return [migration.name for migration in migrations if migration.version not in applied]


async def apply_migrations(
    store: ClickHouseStore, directory: Path | None = None, *, database: str = DATABASE
) -> list[str]:
    """Apply, in version order, the migrations not yet recorded in database; return their names."""
    migrations = load_migrations(directory)
    applied = await _ledger(store, database)
    _check_unchanged(migrations, applied)
    names: list[str] = []
    for migration in migrations:
        if migration.version in applied:
            continue
        for statement in migration.statements:
            await store.command(statement)
        await store.insert(
            f"{database}.schema_migrations",
            [
                {
                    "version": migration.version,
                    "name": migration.name,
                    "checksum": migration.checksum,
                    "applied_at": datetime.now(UTC),
                }
            ],
        )
        names.append(migration.name)
    return names
