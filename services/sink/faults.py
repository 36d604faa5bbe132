"""Fault injection for the sink: a store whose inserts fail while a file exists.

`clickwire sink` wraps its store in `FailWhileFileExists` when CLICKWIRE_SINK_FAIL_WRITES_FILE is
set, so tests and drills can take "ClickHouse" down and bring it back with `touch` and `rm`
without killing the process that owns the embedded engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from clickwire.clickhouse import ClickHouseStore, ClickHouseUnavailable


class FailWhileFileExists:
    """A ClickHouseStore that raises ClickHouseUnavailable on insert while `path` exists."""

    def __init__(self, store: ClickHouseStore, path: Path) -> None:
        self._store = store
        self.path = path
        self.failed_inserts = 0

    async def insert(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, dedup_token: str | None = None
    ) -> None:
        """Insert through the wrapped store unless the fault file exists."""
        if self.path.exists():
            self.failed_inserts += 1
            raise ClickHouseUnavailable(f"writes disabled while {self.path} exists (fault injection)")
        await self._store.insert(table, rows, dedup_token=dedup_token)

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query on the wrapped store."""
        return await self._store.query(sql, params)

    async def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run analyst SQL on the wrapped store."""
        return await self._store.query_readonly(sql, params)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement on the wrapped store."""
        await self._store.command(sql, params)

    async def ping(self) -> bool:
        """False while writes are failing, else the wrapped store's answer."""
        return not self.path.exists() and await self._store.ping()

    async def close(self) -> None:
        """Close the wrapped store."""
        await self._store.close()
