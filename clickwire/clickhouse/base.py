"""What EmbeddedStore and ServerStore have in common: everything but moving bytes to the engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from clickwire.clickhouse.formats import (
    InsertBody,
    decode_rows,
    encode_rows,
    insert_settings,
    split_table_name,
    timestamp_columns,
)
from clickwire.clickhouse.readonly import ensure_readonly

_COLUMNS_SQL = (
    "SELECT name, type FROM system.columns"
    " WHERE database = if({database:String} = '', currentDatabase(), {database:String})"
    " AND table = {table:String}"
)


class BaseStore(ABC):
    """A ClickHouseStore given three primitives: send an insert body, run a query, run a command."""

    def __init__(self) -> None:
        # DateTime64 column names per table, learnt once: DDL changes need a new store.
        self._timestamp_columns: dict[str, frozenset[str]] = {}

    @abstractmethod
    async def _send_insert(self, table: str, body: InsertBody, settings: Mapping[str, str | int]) -> None:
        """Insert an encoded batch into table with settings."""

    @abstractmethod
    async def _fetch(self, sql: str, params: Mapping[str, Any] | None, *, readonly: bool) -> bytes:
        """Run sql and return the body in formats.RESULT_FORMAT."""

    @abstractmethod
    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed (DDL, OPTIMIZE, ...)."""

    @abstractmethod
    async def ping(self) -> bool:
        """Return True when the engine answers a trivial query, False otherwise (never raises)."""

    @abstractmethod
    async def close(self) -> None:
        """Release the engine or connection; later calls raise ClickHouseUnavailable."""

    async def insert(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, dedup_token: str | None = None
    ) -> None:
        """Insert rows atomically; a retry with the same dedup_token is dropped by the engine."""
        if not rows:
            return
        body = encode_rows(rows, await self._timestamp_columns_of(table))
        await self._send_insert(table, body, insert_settings(dedup_token))

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts; `{name:Type}` placeholders bind `params`."""
        return decode_rows(await self._fetch(sql, params, readonly=False))

    async def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run analyst SQL: refuse anything but a read, and run it with readonly=1 as well."""
        ensure_readonly(sql)
        return decode_rows(await self._fetch(sql, params, readonly=True))

    async def _timestamp_columns_of(self, table: str) -> frozenset[str]:
        known = self._timestamp_columns.get(table)
        if known is None:
            database, name = split_table_name(table)
            columns = await self.query(_COLUMNS_SQL, {"database": database, "table": name})
            known = timestamp_columns(columns)
            # An unknown table is not cached, so it is looked up again once a migration creates it.
            if columns:
                self._timestamp_columns[table] = known
        return known
