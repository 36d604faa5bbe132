"""traffic.suspicious: bot or low-trust bursts on a link, or one IP or network hammering it.

State per link, a JSON object in the ``suspicious`` table, for the current tumbling window
(``w`` = its start, event time): clicks, bot clicks, low-trust clicks, the signals that fired,
the heaviest IPs and networks, the offset last applied and when the link last alerted.

IPs and networks are counted with the Misra-Gries summary (at most ``TOP_K`` counters, all
decremented when a new key finds none free): memory per link stays bounded on a popular link,
and any key with more than 1/(TOP_K+1) of the window's clicks keeps a counter, so a hammering IP
is never lost. Its count is then a lower bound (exact while fewer than TOP_K keys were seen).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.dispatcher.payload import derived_event_id, rfc3339_ms
from services.patterns.thresholds import Suspicious

State = dict[str, Any]
TOP_K = 64
TOP_SHOWN = 5


def new_state() -> State:
    """A link never seen."""
    return {"w": -1, "off": -1, "last": 0, "fired": False, "total": 0, "bots": 0, "low": 0,
            "signals": {}, "ips": {}, "asns": {}}


def _bump(counters: dict[str, int], key: str) -> None:
    if key in counters:
        counters[key] += 1
    elif len(counters) < TOP_K:
        counters[key] = 1
    else:
        for k in list(counters):
            counters[k] -= 1
            if counters[k] == 0:
                del counters[k]


def _top(counters: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counters.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_SHOWN]


def observe(state: State, click: Mapping[str, Any], cfg: Suspicious) -> dict[str, Any] | None:
    """Count one click (any kind); return what was found when the link's window turns suspicious."""
    window = cfg.window_s * 1_000
    ts = int(click["ts_ms"])
    start = ts - ts % window
    if start > state["w"]:
        state.update(w=start, fired=False, total=0, bots=0, low=0, signals={}, ips={}, asns={})
    elif start < state["w"]:
        return None  # a click of a window already closed: too late to matter
    state["total"] += 1
    is_bot = bool(click.get("is_bot"))
    low = int(click.get("trust_score", 100)) < cfg.trust_below
    if is_bot:
        state["bots"] += 1
        _bump(state["signals"], f"bot:{click.get('bot_kind') or 'unknown'}")
    if low:
        state["low"] += 1
    if is_bot or low:
        for signal in click.get("trust_signals") or ():
            _bump(state["signals"], str(signal))
    if click.get("ip"):
        _bump(state["ips"], str(click["ip"]))
    if click.get("asn"):
        _bump(state["asns"], f"{click['asn']}|{click.get('as_org') or ''}")
    if state["fired"]:
        return None
    reasons = _reasons(state, cfg)
    if not reasons or (state["last"] and ts - state["last"] < cfg.cooldown_s * 1_000):
        return None
    state["fired"] = True
    state["last"] = ts
    return {"reasons": reasons, "window_start_ms": start, "window_end_ms": start + window}


def _reasons(state: State, cfg: Suspicious) -> list[str]:
    reasons = []
    total = state["total"]
    bad = _bad(state)
    if bad >= cfg.min_count and bad >= cfg.min_share * total:
        reasons.append("low_trust_burst")
    if state["ips"] and max(state["ips"].values()) >= cfg.ip_min:
        reasons.append("ip_hammering")
    if state["asns"]:
        top = max(state["asns"].values())
        if top >= cfg.asn_min and top >= cfg.asn_share * total:
            reasons.append("asn_hammering")
    return reasons


def _bad(state: State) -> int:
    # Bots are low-trust too, but a click can be both: count the larger population, not their sum.
    return int(max(state["bots"], state["low"]))


def suspicious_id(workspace_id: str, link_id: str, window_start_ms: int) -> str:
    """The event id of an alert: one per link and window."""
    return derived_event_id("traffic.suspicious", workspace_id, link_id, window_start_ms)


def suspicious_data(state: State, found: Mapping[str, Any], cfg: Suspicious,
                    link: dict[str, Any] | None) -> dict[str, Any]:
    """The ``data`` of a traffic.suspicious webhook (schemas/webhooks/traffic.suspicious.v1.json)."""
    total = state["total"]
    asns = []
    for key, n in _top(state["asns"]):
        asn, _, org = key.partition("|")
        asns.append({"asn": int(asn), "as_org": org, "clicks": n})
    return {
        "suspicious": {
            "reasons": found["reasons"],
            "window": {"start": rfc3339_ms(found["window_start_ms"]), "end": rfc3339_ms(found["window_end_ms"]),
                       "seconds": cfg.window_s},
            "clicks": total, "bot_clicks": state["bots"], "low_trust_clicks": state["low"],
            "suspicious_share": round(_bad(state) / total, 4) if total else 0.0,
            "top_signals": [{"signal": s, "clicks": n} for s, n in _top(state["signals"])],
            "top_ips": [{"ip": ip, "clicks": n} for ip, n in _top(state["ips"])],
            "top_networks": asns,
        },
        "link": link,
    }
