"""The one interface every service uses to reach ClickHouse, and the errors it raises.

```
ClickwireError (clickwire.errors)
└── ClickHouseError               anything below went wrong talking to ClickHouse
    ├── ClickHouseUnavailable     the engine cannot be reached or opened (connect, IO, closed store)
    ├── QueryError                the engine refused a statement; str() is the engine's message
    │   └── ReadOnlyViolation     query_readonly() got something other than a read
    └── MigrationError            (clickwire.clickhouse.migrations) an applied migration was edited
```

Two implementations share the SQL, the insert format (JSONEachRow) and the result format:
`EmbeddedStore` (chdb, the real engine in-process) and `ServerStore` (clickhouse-connect over
HTTP). `open_store` picks one from the configured URL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clickwire.errors import ClickwireError


class ClickHouseError(ClickwireError):
    """Base of every error raised by clickwire.clickhouse."""


class ClickHouseUnavailable(ClickHouseError):
    """The engine cannot be reached or opened; retrying later may succeed."""


class QueryError(ClickHouseError):
    """The engine refused a statement; the message is the engine's own, `code` its error code."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class ReadOnlyViolation(QueryError):
    """A statement given to query_readonly() is not a read (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN)."""


@runtime_checkable
class ClickHouseStore(Protocol):
    """ClickHouse as clickwire uses it: batch inserts, queries returning dicts, DDL commands."""

    async def insert(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, dedup_token: str | None = None
    ) -> None:
        """Insert rows atomically; a retry with the same dedup_token is dropped by the engine.

        Values into DateTime64 columns may be epoch-millisecond ints (Avro timestamp-millis) or
        datetimes (naive ones are UTC); bytes values are stored base64-encoded.
        """
        ...

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts; `{name:Type}` placeholders bind `params`."""
        ...

    async def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run analyst SQL: refuse anything but a read, and run it with readonly=1 as well."""
        ...

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed (DDL, OPTIMIZE, ...)."""
        ...

    async def ping(self) -> bool:
        """Return True when the engine answers a trivial query, False otherwise (never raises)."""
        ...

    async def close(self) -> None:
        """Release the engine or connection; later calls raise ClickHouseUnavailable."""
        ...


async def open_store(url: str | None, data_dir: Path) -> ClickHouseStore:
    """Open the embedded engine under data_dir when url is None, else a server at url.

    url looks like http://user:pass@host:8123/db (https for TLS). Raises ClickHouseUnavailable
    when the engine cannot be opened or the server does not answer.
    """
    # Imported here so a service configured for one mode never loads the other's driver.
    if url is None:
        from clickwire.clickhouse.embedded import EmbeddedStore

        return await EmbeddedStore.open(data_dir)
    from clickwire.clickhouse.server import ServerStore

    return await ServerStore.open(url)
