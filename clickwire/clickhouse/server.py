"""A ClickHouse server reached over HTTP with clickhouse-connect's async client.

Statements, the insert body and the result format are the ones EmbeddedStore uses (see
formats.py); settings travel as HTTP parameters instead of inline SETTINGS clauses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
from clickhouse_connect.driver.exceptions import Error as DriverError

from clickwire.clickhouse.base import BaseStore
from clickwire.clickhouse.formats import RESULT_FORMAT, SESSION_SETTINGS, InsertBody, check_table_name
from clickwire.clickhouse.store import ClickHouseUnavailable, QueryError

_DEFAULT_PORTS = {"http": 8123, "https": 8443}


@dataclass(frozen=True)
class ServerAddress:
    """Where a ClickHouse server is and how to log in, parsed from a URL."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    database: str
    secure: bool

    def __str__(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://{self.username}@{self.host}:{self.port}/{self.database}"


def parse_server_url(url: str) -> ServerAddress:
    """Parse http(s)://user:pass@host:port/db; missing parts default to default/''/8123 (8443)/default."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"ClickHouse URL must start with http:// or https://, got {parts.scheme or 'none'}")
    if not parts.hostname:
        raise ValueError("ClickHouse URL has no host")
    database = unquote(parts.path.strip("/")) or "default"
    if "/" in database:
        raise ValueError(f"ClickHouse URL path must be a database name, got {database!r}")
    return ServerAddress(
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        secure=parts.scheme == "https",
    )


def _translate(error: Exception) -> Exception:
    code = getattr(error, "code", None)
    # The driver raises OperationalError for transport failures and for a retried request the server
    # refused; only the former (no server error code) means the server is out of reach.
    if isinstance(error, OperationalError) and code is None:
        return ClickHouseUnavailable(str(error))
    if isinstance(error, DatabaseError):
        return QueryError(str(error), code=int(code) if code is not None else None)
    return ClickHouseUnavailable(str(error))


class ServerStore(BaseStore):
    """ClickHouseStore on a ClickHouse server, over HTTP."""

    def __init__(self, client: Any, address: ServerAddress) -> None:
        super().__init__()
        self._client: Any = client
        self.address = address

    @classmethod
    async def open(cls, url: str) -> ServerStore:
        """Connect to the server at url (http://user:pass@host:8123/db); ClickHouseUnavailable if down."""
        address = parse_server_url(url)
        try:
            client = await clickhouse_connect.get_async_client(
                host=address.host,
                port=address.port,
                username=address.username,
                password=address.password,
                database=address.database,
                secure=address.secure,
                settings=dict(SESSION_SETTINGS),
            )
        except (DriverError, OSError) as error:
            raise ClickHouseUnavailable(f"cannot reach ClickHouse at {address}: {error}") from error
        return cls(client, address)

    def _live_client(self) -> Any:
        if self._client is None:
            raise ClickHouseUnavailable(f"connection to {self.address} is closed")
        return self._client

    async def _send_insert(self, table: str, body: InsertBody, settings: Mapping[str, str | int]) -> None:
        client = self._live_client()
        try:
            await client.raw_insert(
                check_table_name(table),
                column_names=body.columns,
                insert_block=body.data,
                settings=dict(settings),
                fmt=body.format,
            )
        except (DriverError, OSError) as error:
            raise _translate(error) from error

    async def _fetch(self, sql: str, params: Mapping[str, Any] | None, *, readonly: bool) -> bytes:
        client = self._live_client()
        settings: dict[str, Any] = dict(SESSION_SETTINGS)
        if readonly:
            settings["readonly"] = 1
        try:
            body = await client.raw_query(
                sql, parameters=dict(params or {}), settings=settings, fmt=RESULT_FORMAT
            )
        except (DriverError, OSError) as error:
            raise _translate(error) from error
        return bytes(body)

    async def command(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        """Run a statement whose result is not needed (DDL, OPTIMIZE, ...)."""
        client = self._live_client()
        try:
            await client.command(sql, parameters=dict(params) if params else None)
        except (DriverError, OSError) as error:
            raise _translate(error) from error

    async def ping(self) -> bool:
        """Return True when the server answers its /ping endpoint, False otherwise (never raises)."""
        if self._client is None:
            return False
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        """Close the HTTP connection pool; later calls raise ClickHouseUnavailable."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()
