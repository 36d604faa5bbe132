"""ClickHouse for clickwire: one async store interface over chdb or a server, and the migrations.

`open_store(url, data_dir)` returns a ClickHouseStore (embedded chdb when url is None), and
`apply_migrations(store)` brings the `clickwire` database up to schemas/clickhouse.
"""

from clickwire.clickhouse.migrations import MigrationError, apply_migrations, pending_migrations
from clickwire.clickhouse.store import (
    ClickHouseError,
    ClickHouseStore,
    ClickHouseUnavailable,
    QueryError,
    ReadOnlyViolation,
    open_store,
)

__all__ = [
    "ClickHouseError",
    "ClickHouseStore",
    "ClickHouseUnavailable",
    "MigrationError",
    "QueryError",
    "ReadOnlyViolation",
    "apply_migrations",
    "open_store",
    "pending_migrations",
]
