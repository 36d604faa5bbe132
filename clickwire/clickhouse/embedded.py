"""ClickHouse embedded in this process through chdb, its data persisted under one directory.

In embedded mode one process owns the engine. chdb holds the data directory exclusively: a second
process that opens it fails, and one process can hold only one data directory at a time. So
the service that opens the store (`clickwire sink` in the default stack) is the only writer and reader;
everyone else (analysts' SQL, the dispatcher's attempt log, the API) reaches the data through that
process, not through a ClickHouse port, since chdb cannot open ClickHouse's own listeners either.

chdb calls block, so they run in a worker thread, one at a time: an asyncio.Lock queues callers
without tying up threads, and a threading.Lock keeps a call whose awaiting task was cancelled
from overlapping the next one.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import chdb

from clickwire.clickhouse.base import BaseStore
from clickwire.clickhouse.formats import (
    RESULT_FORMAT,
    SESSION_SETTINGS,
    InsertBody,
    insert_statement,
    sql_string,
)
from clickwire.clickhouse.store import ClickHouseUnavailable, QueryError

T = TypeVar("T")

# chdb ships no annotations for connect(); this is the one place its type is assumed.
_connect = cast(Callable[[str], Any], chdb.connect)

_CODE = re.compile(r"Code: (\d+)\.")
_WRAPPER_PREFIX = re.compile(r"^Streaming insert (?:append|finish) failed: ")


def _query_error(error: Exception) -> QueryError:
    message = _WRAPPER_PREFIX.sub("", str(error)).strip()
    match = _CODE.search(message)
    return QueryError(message, code=int(match.group(1)) if match else None)


def _set_statements(settings: Mapping[str, str | int]) -> list[str]:
    return [
        f"SET {name} = {sql_string(value) if isinstance(value, str) else value}"
        for name, value in settings.items()
    ]


def _chdb_params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    # chdb formats None as 'None'; ClickHouse spells a NULL query parameter \N.
    return {name: "\\N" if value is None else value for name, value in (params or {}).items()}


class EmbeddedStore(BaseStore):
    """ClickHouseStore on the chdb engine embedded in this process."""

    def __init__(self, data_dir: Path, connection: Any, reader: Any) -> None:
        super().__init__()
        self.data_dir = data_dir
        self._connection: Any = connection
        # A second session whose settings include readonly=1 for analyst SQL: readonly cannot be
        # lifted once set, so it gets a session of its own.
        self._reader: Any = reader
        self._queue = asyncio.Lock()
        self._engine_lock = threading.Lock()

    @classmethod
    async def open(cls, data_dir: Path) -> EmbeddedStore:
        """Open (creating if needed) the embedded engine whose data lives under data_dir."""
        return await asyncio.to_thread(cls._open_blocking, data_dir)

    @classmethod
    def _open_blocking(cls, data_dir: Path) -> EmbeddedStore:
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            connection = _connect(str(data_dir))
            reader = _connect(str(data_dir))
            for statement in _set_statements(SESSION_SETTINGS):
                connection.query(statement)
                reader.query(statement)
            reader.query("SET readonly = 1")
        except (OSError, RuntimeError) as error:
            raise ClickHouseUnavailable(
                f"cannot open embedded ClickHouse in {data_dir}: {error} (only one process may hold a data"
                " directory, and one process only one directory)"
            ) from error
        return cls(data_dir, connection, reader)

    async def _run(self, call: Callable[[], T]) -> T:
        async with self._queue:
            return await asyncio.to_thread(self._locked, call)

    def _locked(self, call: Callable[[], T]) -> T:
        with self._engine_lock:
            if self._connection is None:
                raise ClickHouseUnavailable(f"embedded ClickHouse in {self.data_dir} is closed")
            try:
                return call()
            except (RuntimeError, ValueError) as error:
                raise _query_error(error) from error

    async def _send_insert(self, table: str, body: InsertBody, settings: Mapping[str, str | int]) -> None:
        statement = insert_statement(table, body.columns, settings)

        def send() -> None:
            inserter = self._connection.send_insert(statement, body.format)
            try:
                inserter.append(body.data)
                inserter.finish()
            finally:
                # No-op after finish(); after a failed append it aborts so the session is usable again.
                inserter.cancel()

        await self._run(send)

    async def _fetch(self, sql: str, params: Mapping[str, Any] | None, *, readonly: bool) -> bytes:
        session = "_reader" if readonly else "_connection"
        values = _chdb_params(params)

        def fetch() -> bytes:
            result = getattr(self, session).query(sql, RESULT_FORMAT, params=values)
            return bytes(result.bytes())

        return await self._run(fetch)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed (DDL, OPTIMIZE, ...)."""
        values = _chdb_params(params)
        await self._run(lambda: self._connection.query(sql, "TabSeparated", params=values))

    async def ping(self) -> bool:
        """Return True when the engine answers SELECT 1, False otherwise (never raises)."""
        try:
            return await self.query("SELECT 1 AS ok") == [{"ok": 1}]
        except Exception:
            return False

    async def close(self) -> None:
        """Release the engine so another store (or process) can open the directory."""

        def close() -> None:
            reader, connection = self._reader, self._connection
            self._reader = self._connection = None
            if reader is not None:
                reader.close()
            if connection is not None:
                connection.close()

        async with self._queue:
            await asyncio.to_thread(self._close_locked, close)

    def _close_locked(self, close: Callable[[], None]) -> None:
        with self._engine_lock:
            close()
