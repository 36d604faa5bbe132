"""Bad input is a clear 4xx problem+json, never a 5xx, and never a half-written link on the topic."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import pytest

from clickwire.topics import Topic
from tests.integration.api.conftest import RunningApi, problem, read_topic

pytestmark = pytest.mark.kafka

_BAD_BODIES: list[tuple[str, bytes, str, int, str]] = [
    # (case, body, content type, status, reason)
    ("invalid JSON", b'{"destination": "https://e.com/"', "application/json", 400, "invalid_json"),
    ("invalid UTF-8", b'{"destination": "https://e.com/\xff"}', "application/json", 400, "invalid_json"),
    ("empty body", b"", "application/json", 400, "invalid_json"),
    ("array body", b'[{"destination": "https://e.com/"}]', "application/json", 422, "invalid_body"),
    ("string body", b'"https://e.com/"', "application/json", 422, "invalid_body"),
    ("unknown field", b'{"destination": "https://e.com/", "colour": "red"}', "application/json", 422,
     "invalid_body"),
    ("number for a string", b'{"destination": 42}', "application/json", 422, "invalid_body"),
    ("string for a number", b'{"destination": "https://e.com/", "max_clicks": "5"}', "application/json", 422,
     "invalid_body"),
    ("bool for a number", b'{"destination": "https://e.com/", "redirect_type": true}', "application/json", 422,
     "invalid_body"),
    ("float for an int", b'{"destination": "https://e.com/", "max_clicks": 1.5}', "application/json", 422,
     "invalid_body"),
    ("object for a list", b'{"destination": "https://e.com/", "tags": {"a": 1}}', "application/json", 422,
     "invalid_body"),
    ("redirect type 303", b'{"destination": "https://e.com/", "redirect_type": 303}', "application/json", 422,
     "invalid_body"),
    ("naive expiry", b'{"destination": "https://e.com/", "expires_at": "2030-01-01T00:00:00"}',
     "application/json", 422, "invalid_body"),
    ("bad rule field", b'{"destination": "https://e.com/", "rules": [{"conditions": [{"field": "moon", '
     b'"op": "eq", "values": ["x"]}], "destination": "https://e.com/m"}]}', "application/json", 422, "invalid_body"),
    ("missing destination", b'{"code": "nodest"}', "application/json", 422, "invalid_body"),
    ("path trick code", b'{"destination": "https://e.com/", "code": "../admin"}', "application/json", 422,
     "invalid_code"),
    ("control char code", b'{"destination": "https://e.com/", "code": "a\\u0000b"}', "application/json", 422,
     "invalid_code"),
    ("reserved code", b'{"destination": "https://e.com/", "code": "Metrics"}', "application/json", 422,
     "invalid_code"),
    ("bad domain", b'{"destination": "https://e.com/", "domain": "not a host"}', "application/json", 422,
     "domain_not_allowed"),
    ("huge URL", b'{"destination": "https://e.com/' + b"a" * 3000 + b'"}', "application/json", 422,
     "url_too_long"),
    ("form body", b"destination=https://e.com/", "application/x-www-form-urlencoded", 415,
     "unsupported_media_type"),
    ("bulk not a list", b'{"links": {"destination": "https://e.com/"}}', "application/json", 422, "invalid_body"),
    ("empty bulk", b'{"links": []}', "application/json", 422, "invalid_body"),
]


@pytest.mark.parametrize(("case", "body", "ctype", "status", "reason"), _BAD_BODIES, ids=[b[0] for b in _BAD_BODIES])
async def test_bad_create_bodies(api: RunningApi, case: str, body: bytes, ctype: str, status: int,
                                 reason: str) -> None:
    """Each malformed create is refused with the documented status and reason."""
    async with api.client(await api.token("ws_bad")) as c:
        r = await c.post("/v1/links", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    assert problem(r)["reason"] == reason


async def test_validation_errors_name_the_field(api: RunningApi) -> None:
    """A 422 lists every offending field with pydantic's error type and never echoes the input."""
    async with api.client(await api.token("ws_bad")) as c:
        r = await c.post("/v1/links", json={"destination": 7, "colour": "secret-value"})
    errors = problem(r)["errors"]
    assert {(tuple(e["loc"]), e["type"]) for e in errors} == {(("destination",), "string_type"),
                                                               (("colour",), "extra_forbidden")}
    assert "secret-value" not in r.text


async def test_oversized_body_is_413(api: RunningApi) -> None:
    """A body over the 2 MB cap is 413, whether declared by Content-Length or streamed chunked."""
    big = b'{"destination": "https://e.com/", "tags": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]

    async with api.client(await api.token("ws_bad")) as c:
        declared = await c.post("/v1/links", content=big, headers={"Content-Type": "application/json"})
        streamed = await c.post("/v1/links", content=chunks(), headers={"Content-Type": "application/json"})
    for r in (declared, streamed):
        assert r.status_code == 413
        assert problem(r)["reason"] == "body_too_large"


async def test_bad_patch_bodies(api: RunningApi) -> None:
    """PATCH refuses unknown fields, wrong types and invalid JSON, leaving the link as it was."""
    async with api.client(await api.token("ws_bad")) as c:
        link = (await c.post("/v1/links", json={"destination": "https://example.com/keep"})).json()
        for body, status in ((b'{"colour": 1}', 422), (b'{"tags": "a"}', 422), (b"{", 400),
                             (b'{"bot_policy": "maybe"}', 422), (b'{"tags": null}', 422)):
            r = await c.patch(f"/v1/links/{link['id']}", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (body, r.text)
            problem(r)
        assert (await c.get(f"/v1/links/{link['id']}")).json()["destination"] == "https://example.com/keep"
    records = [k for k, _ in await read_topic(api.common, Topic.LINKS) if k == f"clk.localhost/{link['code']}"]
    assert len(records) == 1


async def test_unknown_routes_and_methods_are_problems(api: RunningApi) -> None:
    """Unknown paths are 404 and wrong methods 405, both as problem+json."""
    async with api.client(await api.token("ws_bad")) as c:
        nf = await c.get("/v1/nothing-here")
        na = await c.put("/v1/links", json={})
        missing = await c.get("/v1/links/lnk_doesnotexist")
    assert (nf.status_code, problem(nf)["reason"]) == (404, "not_found")
    assert (na.status_code, problem(na)["reason"]) == (405, "method_not_allowed")
    assert (missing.status_code, problem(missing)["reason"]) == (404, "not_found")


async def test_no_bad_request_was_ever_a_5xx(api: RunningApi) -> None:
    """After every bad-input test in this module, the API's metrics show no 5xx at all."""
    async with api.client(None) as c:
        metrics = (await c.get("/metrics")).text
    statuses = re.findall(r'clickwire_api_requests_total\{method="\w+",status="(\d+)"\}', metrics)
    assert statuses
    assert "413" in statuses
    assert "422" in statuses
    assert not [s for s in statuses if s.startswith("5")]


async def test_openapi_and_docs(api: RunningApi) -> None:
    """/openapi.json is OpenAPI 3.1 whose every $ref resolves, and /docs is a page with no external assets."""
    async with api.client(None) as c:
        doc = (await c.get("/openapi.json")).json()
        page = await c.get("/docs")
        health = await c.get("/health")
    assert doc["openapi"] == "3.1.0"
    assert {"post", "get"} <= set(doc["paths"]["/v1/links"])
    assert {"get", "patch", "delete"} <= set(doc["paths"]["/v1/links/{link_id}"])
    schemas = doc["components"]["schemas"]
    assert schemas["LinkCreate"]["additionalProperties"] is False

    def refs(node: object) -> Iterator[str]:
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = list(refs(doc))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text)
    assert health.status_code == 200
    assert health.json()["ok"] is True
