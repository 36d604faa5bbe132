"""A small async client for the sink's /sql endpoint, answering like `ClickHouseStore.query_readonly`.

Other services (the API's attempt listing, the dashboard) and `clickwire sql` use it in embedded
mode, where only the sink can open ClickHouse:

    async with SqlClient("http://127.0.0.1:9102") as sql:
        rows = await sql.query("SELECT count() AS n FROM clickwire.clicks WHERE workspace_id = {ws:String}",
                               {"ws": "w1"})

Errors are the store's: ReadOnlyViolation (403), QueryError (400, the engine's message),
ClickHouseUnavailable (the sink does not answer, or answers 503). DateTime and Date values come
back as datetime/date, as from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from types import TracebackType
from typing import Any

import httpx
import orjson

from clickwire.clickhouse import ClickHouseUnavailable, QueryError, ReadOnlyViolation


class SqlClient:
    """Runs read-only SQL through a sink's /sql endpoint."""

    def __init__(self, url: str, *, timeout_s: float = 60.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, transport=transport)

    async def __aenter__(self) -> SqlClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a read-only query as dicts; `{name:Type}` placeholders bind `params`.

        Every row or QueryError: /sql answers at most its row limit and flags the rest as
        truncated, and a silent prefix reads as a wrong answer (query_full() has the flag).
        """
        answer = await self.query_full(sql, params)
        if answer.get("truncated"):
            raise QueryError(f"the answer has more than {answer['rows']:,} rows, the limit of {self.url}/sql: "
                             "narrow the query or page through it (ORDER BY ... LIMIT)")
        return answer["data"]  # type: ignore[no-any-return]

    async def query_readonly(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The same as query(): everything through /sql is read-only."""
        return await self.query(sql, params)

    async def query_full(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The whole answer: meta, data (converted), rows, truncated, elapsed_ms."""
        body = orjson.dumps({"query": sql, "params": dict(params or {})})
        try:
            response = await self._client.post("/sql", content=body,
                                               headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            raise ClickHouseUnavailable(
                f"no clickwire sink answered at {self.url} ({type(exc).__name__}); is `clickwire sink` running?"
            ) from exc
        try:
            answer: dict[str, Any] = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ClickHouseUnavailable(f"{self.url}/sql answered {response.status_code} without JSON") from None
        if response.status_code != 200:
            message = str(answer.get("error", response.text))
            if response.status_code == 403:
                raise ReadOnlyViolation(message)
            if response.status_code == 400:
                raise QueryError(message, code=answer.get("code"))
            raise ClickHouseUnavailable(message)
        _convert(answer)
        return answer

    async def ping(self) -> bool:
        """True when the sink answers /health with 200."""
        try:
            return (await self._client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _convert(answer: dict[str, Any]) -> None:
    parsers = {m["name"]: m["kind"] for m in answer.get("meta", []) if m.get("kind")}
    if not parsers:
        return
    for row in answer["data"]:
        for column, kind in parsers.items():
            value = row.get(column)
            if isinstance(value, str):
                row[column] = datetime.fromisoformat(value) if kind == "datetime" else date.fromisoformat(value)
