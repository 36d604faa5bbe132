"""The /v1/links resource against a real broker and a real HTTP server."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from clickwire.codec import codec_for
from clickwire.codes import ALPHABET
from clickwire.topics import Topic
from tests.integration.api.conftest import RunningApi, problem, read_topic, until

pytestmark = pytest.mark.kafka


def alias() -> str:
    return "a" + uuid.uuid4().hex[:12]


async def _on_topic(api: RunningApi, key: str) -> list[dict[str, Any] | None]:
    codec = codec_for(Topic.LINKS)
    return [None if v is None else codec.decode(v) for k, v in await read_topic(api.common, Topic.LINKS) if k == key]


async def test_create_is_on_the_topic_when_the_api_answers(api: RunningApi) -> None:
    """A 201 means the link is already on the links topic, with its checked destination and trust."""
    code = alias()
    async with api.client(await api.token()) as c:
        r = await c.post("/v1/links", json={"code": code, "destination": "http://bit.ly/x", "tags": ["t1"],
                                            "utm_source": "news", "redirect_type": 301})
    assert r.status_code == 201, r.text
    link = r.json()
    assert (link["domain"], link["code"], link["redirect_type"]) == ("clk.localhost", code, 301)
    records = await _on_topic(api, f"clk.localhost/{code}")
    assert len(records) == 1
    assert records[0] is not None
    assert records[0]["id"] == link["id"]
    assert records[0]["utm_source"] == "news"
    assert set(records[0]["destination_flags"]) == {"shortener", "insecure_scheme"}
    assert records[0]["destination_trust"] == link["destination_trust"] < 100


async def test_random_codes_are_12_base62_characters(api: RunningApi) -> None:
    """Without a code the API mints a 12-character base62 one."""
    async with api.client(await api.token()) as c:
        r = await c.post("/v1/links", json={"destination": "https://example.com/"})
    assert r.status_code == 201
    code = r.json()["code"]
    assert len(code) == 12
    assert set(code) <= set(ALPHABET)


async def test_taken_alias_is_409(api: RunningApi) -> None:
    """A second create of the same domain/code is refused with reason alias_taken and nothing published."""
    code = alias()
    async with api.client(await api.token()) as c:
        first = await c.post("/v1/links", json={"code": code, "destination": "https://example.com/1"})
        second = await c.post("/v1/links", json={"code": code, "destination": "https://example.com/2"})
        other_domain = await c.post("/v1/links", json={"code": code, "domain": "go.example.com",
                                                       "destination": "https://example.com/3"})
    assert first.status_code == 201
    assert second.status_code == 409
    assert problem(second)["reason"] == "alias_taken"
    assert other_domain.status_code == 201
    assert len(await _on_topic(api, f"clk.localhost/{code}")) == 1


@pytest.mark.parametrize(("destination", "reason"), [
    ("http://127.0.0.1/admin", "private_ip"),
    ("ftp://example.com/f", "scheme_not_allowed"),
    ("https://user:pw@example.com/", "credentials_in_url"),
    ("https://malware-test.clickwire.invalid.com/", None),
])
async def test_unsafe_destinations_are_422_with_a_reason(api: RunningApi, destination: str, reason: str | None) -> None:
    """Refused destinations are 422 with check_destination's machine-readable reason; safe ones pass."""
    code = alias()
    async with api.client(await api.token()) as c:
        r = await c.post("/v1/links", json={"code": code, "destination": destination})
    if reason is None:
        assert r.status_code == 201
        return
    assert r.status_code == 422
    body = problem(r)
    assert (body["reason"], body["field"]) == (reason, "destination")
    assert await _on_topic(api, f"clk.localhost/{code}") == []


async def test_missing_or_bad_key_is_401(api: RunningApi) -> None:
    """Every /v1 route needs a valid key: none, a malformed one or a wrong secret is a 401 problem."""
    token = await api.token()
    wrong_secret = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for t in (None, "nonsense", wrong_secret):
        async with api.client(t) as c:
            for r in (await c.get("/v1/links"), await c.post("/v1/links", json={"destination": "https://e.com/"}),
                      await c.get("/v1/keys")):
                assert r.status_code == 401
                assert problem(r)["reason"] == "unauthorized"
                assert r.headers["www-authenticate"].startswith("Bearer")


async def test_revoked_key_stops_working(api: RunningApi) -> None:
    """After DELETE /v1/keys/{id} the key gets 401 while another key of the workspace still works."""
    keeper, doomed = await api.token("ws_rev"), await api.token("ws_rev")
    doomed_id = doomed[3:].split(".")[0]
    async with api.client(keeper) as c:
        listed = (await c.get("/v1/keys")).json()["data"]
        assert doomed_id in {k["id"] for k in listed}
        assert all("hash" not in k for k in listed)
        assert (await c.delete(f"/v1/keys/{doomed_id}")).status_code == 204
    async with api.client(doomed) as d:
        async def refused() -> bool:
            return (await d.get("/v1/links")).status_code == 401
        await until(refused, "revoked key refused")
    async with api.client(keeper) as c:
        assert (await c.get("/v1/links")).status_code == 200


async def test_links_are_private_to_their_workspace(api: RunningApi) -> None:
    """Another workspace's link is 404 to read, patch and delete, and absent from its list."""
    async with api.client(await api.token("ws_one")) as one:
        created = (await one.post("/v1/links", json={"destination": "https://example.com/", "tags": ["mine"]})).json()
    async with api.client(await api.token("ws_two")) as two:
        for r in (await two.get(f"/v1/links/{created['id']}"),
                  await two.patch(f"/v1/links/{created['id']}", json={"tags": []}),
                  await two.delete(f"/v1/links/{created['id']}")):
            assert r.status_code == 404
            assert problem(r)["reason"] == "not_found"
        assert (await two.get("/v1/links", params={"tag": "mine"})).json()["data"] == []


async def test_patch_updates_and_rechecks(api: RunningApi) -> None:
    """PATCH changes given fields only, re-checks a new destination and refuses domain/code changes."""
    async with api.client(await api.token()) as c:
        link = (await c.post("/v1/links", json={"destination": "https://example.com/a", "campaign": "spring",
                                                "max_clicks": 5})).json()
        r = await c.patch(f"/v1/links/{link['id']}", json={"destination": "https://example.org/b",
                                                            "max_clicks": None})
        assert r.status_code == 200, r.text
        got = (await c.get(f"/v1/links/{link['id']}")).json()
        assert (got["destination"], got["max_clicks"], got["campaign"]) == ("https://example.org/b", None, "spring")
        assert got["updated_at"] >= link["updated_at"]
        bad = await c.patch(f"/v1/links/{link['id']}", json={"destination": "http://10.0.0.1/"})
        assert bad.status_code == 422
        assert problem(bad)["reason"] == "private_ip"
        moved = await c.patch(f"/v1/links/{link['id']}", json={"code": "elsewhere"})
        assert moved.status_code == 422
        assert problem(moved)["reason"] == "immutable_field"
        nulled = await c.patch(f"/v1/links/{link['id']}", json={"destination": None})
        assert nulled.status_code == 422
    records = await _on_topic(api, f"clk.localhost/{link['code']}")
    assert [r["destination"] for r in records if r] == ["https://example.com/a", "https://example.org/b"]


async def test_delete_publishes_a_tombstone(api: RunningApi) -> None:
    """DELETE leaves a tombstone on the topic before answering, and the link is gone."""
    async with api.client(await api.token()) as c:
        link = (await c.post("/v1/links", json={"destination": "https://example.com/"})).json()
        assert (await c.delete(f"/v1/links/{link['id']}")).status_code == 204
        assert (await c.get(f"/v1/links/{link['id']}")).status_code == 404
        again = await c.post("/v1/links", json={"code": link["code"], "destination": "https://example.com/2"})
    assert (await _on_topic(api, f"clk.localhost/{link['code']}"))[1] is None
    assert again.status_code == 201  # a deleted alias is free again


async def test_list_pages_with_an_opaque_cursor(api: RunningApi) -> None:
    """Listing by tag walks every matching link exactly once, page by page."""
    tag = alias()
    async with api.client(await api.token("ws_list")) as c:
        ids = {(await c.post("/v1/links", json={"destination": "https://example.com/", "tags": [tag]})).json()["id"]
               for _ in range(5)}
        await c.post("/v1/links", json={"destination": "https://example.com/", "tags": ["other"]})
        seen: list[str] = []
        cursor = None
        for _ in range(4):
            params = {"tag": tag, "limit": "2", **({"cursor": cursor} if cursor else {})}
            page = (await c.get("/v1/links", params=params)).json()
            seen += [link["id"] for link in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(ids)
        assert len(seen) == 5
        assert problem(await c.get("/v1/links", params={"cursor": "nope"}))["reason"] == "invalid_cursor"
        assert problem(await c.get("/v1/links", params={"colour": "red"}))["reason"] == "invalid_query"
        assert problem(await c.get("/v1/links", params={"limit": "0"}))["reason"] == "invalid_query"


async def test_bulk_create_is_per_item(api: RunningApi) -> None:
    """A bulk request creates the valid items, refuses the others with a problem each, publishes nothing for them."""
    taken, fresh, bad = alias(), alias(), alias()
    async with api.client(await api.token()) as c:
        await c.post("/v1/links", json={"code": taken, "destination": "https://example.com/"})
        r = await c.post("/v1/links", json={"links": [
            {"code": fresh, "destination": "https://example.com/1"},
            {"code": bad, "destination": "https://example.com/2", "max_clicks": "ten"},
            {"code": taken, "destination": "https://example.com/3"},
            {"code": bad, "destination": "http://192.168.1.1/"},
        ]})
        too_many = await c.post("/v1/links", json={"links": [{"destination": "https://e.com/"}] * 1001})
    assert r.status_code == 207
    body = r.json()
    assert [x["status"] for x in body["results"]] == [201, 422, 409, 422]
    assert [x.get("problem", {}).get("reason") for x in body["results"]] == [None, "invalid_body", "alias_taken",
                                                                           "private_ip"]
    assert (body["created"], body["failed"]) == (1, 3)
    assert len(await _on_topic(api, f"clk.localhost/{fresh}")) == 1
    assert await _on_topic(api, f"clk.localhost/{bad}") == []
    assert too_many.status_code == 422
    assert problem(too_many)["reason"] == "too_many_items"


async def test_blocklist_change_blocks_existing_links(api: RunningApi) -> None:
    """Adding a host to the blocklist file republishes its links with blocked=true and refuses new ones."""
    host = f"{alias()}.com"
    original = api.blocklist.read_text()
    async with api.client(await api.token()) as c:
        link = (await c.post("/v1/links", json={"destination": f"https://{host}/page"})).json()
        assert link["blocked"] is False
        api.blocklist.write_text(original + f"\n{host}  # test entry\n")
        try:
            async def blocked() -> bool:
                return (await c.get(f"/v1/links/{link['id']}")).json()["blocked"] is True
            await until(blocked, "link republished as blocked")
            records = await _on_topic(api, f"clk.localhost/{link['code']}")
            assert records[-1] is not None
            assert records[-1]["blocked"] is True
            refused = await c.post("/v1/links", json={"destination": f"https://sub.{host}/"})
            assert refused.status_code == 422
            assert problem(refused)["reason"] == "blocklisted"
        finally:
            api.blocklist.write_text(original)

        async def unblocked() -> bool:
            return (await c.get(f"/v1/links/{link['id']}")).json()["blocked"] is False
        await until(unblocked, "link unblocked after the entry was removed")
