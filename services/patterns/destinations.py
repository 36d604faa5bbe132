"""The destination checker and the link-state rules: link.destination_failing and link.blocked.

Probing: each link's destination gets a HEAD (a GET when HEAD is refused with 405/501) through
the dispatcher's ``VettedTransport`` — every connection goes to an address the SSRF guard vetted,
redirects are not followed (a 3xx answers the check), short timeouts. A destination the guard
refuses is not probed at all: it is not ours to call, and the API already judged it.

What fails a check: no answer (timeout, refused, reset), a 5xx, 404 or 410. Other 4xx (403 from bot
protection, 401 on members-only pages) mean the site is up.

State per link (a JSON object in the ``link-state`` table, key = domain/code, co-partitioned with
the links topic): the link as last seen, ``blocked``, consecutive failures, when the run of
failures started, and whether it was reported. A link is reported once per run of failures of at
least ``fail_after`` checks; a passing check ends the run, so a later failure is reported again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from services.dispatcher.payload import derived_event_id, rfc3339_ms
from services.dispatcher.ssrf import SSRFError

State = dict[str, Any]
USER_AGENT = "clickwire-linkcheck/1 (+https://github.com/clickwire)"
FAILING_STATUSES = frozenset({404, 410})


@dataclass(frozen=True, slots=True)
class Probe:
    """The outcome of one check: ``ok`` None means not checked (refused by the SSRF guard)."""

    ok: bool | None
    status: int
    error: str


def failed(status: int) -> bool:
    """Whether a response status means the destination is failing."""
    return status >= 500 or status in FAILING_STATUSES


async def probe(client: httpx.AsyncClient, url: str) -> Probe:
    """Check one destination (HEAD, then GET if HEAD is not allowed); never raises for network errors."""
    try:
        resp = await client.request("HEAD", url, headers={"user-agent": USER_AGENT})
        if resp.status_code in (405, 501):
            resp = await client.request("GET", url, headers={"user-agent": USER_AGENT})
    except SSRFError as exc:
        return Probe(None, 0, f"ssrf:{exc.reason}")
    except httpx.TimeoutException:
        return Probe(False, 0, "timeout")
    except httpx.HTTPError as exc:
        return Probe(False, 0, f"connect:{type(exc).__name__}")
    return Probe(not failed(resp.status_code), resp.status_code, "" if resp.status_code < 400 else "http_status")


def link_ref(link: Mapping[str, Any]) -> dict[str, Any]:
    """The link as derived events carry it (schemas: ``link`` in each derived event's data)."""
    return {"id": link["id"], "domain": link["domain"], "code": link["code"],
            "destination": link.get("destination"), "tags": list(link.get("tags") or ()),
            "campaign": link.get("campaign")}


def new_state(link: Mapping[str, Any]) -> State:
    """The state of a link seen for the first time."""
    return {"link": link_ref(link), "workspace_id": link["workspace_id"], "blocked": bool(link.get("blocked")),
            "fails": 0, "since": 0, "reported": False, "status": 0, "error": ""}


def link_changed(state: State | None, link: Mapping[str, Any]) -> tuple[State, bool]:
    """Apply a new version of a link; True when it just became blocked (false before, true now)."""
    if state is None:
        return new_state(link), False
    was_blocked = bool(state["blocked"])
    if link.get("destination") != state["link"].get("destination"):
        state.update(fails=0, since=0, reported=False)  # a new destination starts a new record
    state.update(link=link_ref(link), workspace_id=link["workspace_id"], blocked=bool(link.get("blocked")))
    return state, state["blocked"] and not was_blocked


def checked(state: State, result: Probe, at_ms: int, fail_after: int) -> bool:
    """Apply one check; True when this check makes the link's destination reportable as failing."""
    if result.ok is None:
        return False
    if result.ok:
        state.update(fails=0, since=0, reported=False, status=result.status, error="")
        return False
    if state["fails"] == 0:
        state["since"] = at_ms
    state.update(fails=state["fails"] + 1, status=result.status, error=result.error)
    if state["fails"] >= fail_after and not state["reported"]:
        state["reported"] = True
        return True
    return False


def failing_id(workspace_id: str, link_id: str, since_ms: int) -> str:
    """The event id of a failing report: one per link and run of failures."""
    return derived_event_id("link.destination_failing", workspace_id, link_id, since_ms)


def failing_data(state: State, at_ms: int) -> dict[str, Any]:
    """The ``data`` of link.destination_failing (schemas/webhooks/link.destination_failing.v1.json)."""
    return {"link": state["link"],
            "check": {"consecutive_failures": state["fails"], "failing_since": rfc3339_ms(state["since"]),
                      "last_checked_at": rfc3339_ms(at_ms), "last_status": state["status"] or None,
                      "last_error": state["error"]}}


def blocked_id(workspace_id: str, link_id: str, updated_ms: int) -> str:
    """The event id of a blocked report: one per link version that blocked it."""
    return derived_event_id("link.blocked", workspace_id, link_id, updated_ms)


def blocked_data(link: Mapping[str, Any]) -> dict[str, Any]:
    """The ``data`` of link.blocked (schemas/webhooks/link.blocked.v1.json)."""
    return {"link": link_ref(link), "reason": "blocklisted",
            "destination_flags": list(link.get("destination_flags") or ())}
