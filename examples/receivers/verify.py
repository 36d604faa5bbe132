#!/usr/bin/env python3
"""Verify a clickwire webhook delivery (Standard Webhooks signature), standard library only.

    python3 verify.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE BODY_FILE [NOW]

Exit status 0 and "ok" when a v1 signature matches, 1 and the reason otherwise. NOW (seconds since
the epoch) replaces the clock, to check a recorded delivery; by default the timestamp must be within
5 minutes of now. With no arguments it checks the Standard Webhooks specification's test vector.

In a receiver, call verify() with the raw request body: the bytes as received, never re-serialized
JSON, since any change in spacing or key order breaks the signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import time
from collections.abc import Mapping

TOLERANCE_S = 300


class InvalidSignature(Exception):
    """The delivery did not verify."""


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> None:
    """Return if the delivery is authentic and fresh, raise InvalidSignature otherwise."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, signatures = (lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and ts and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    if not ts.isdigit():
        raise InvalidSignature("bad timestamp")
    if abs((time.time() if now is None else now) - int(ts)) > TOLERANCE_S:
        raise InvalidSignature("timestamp outside the 5-minute window (replayed or clock skew)")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest())
    # During a secret rotation several signatures arrive, space-separated: any one matching is enough.
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return
    raise InvalidSignature("no signature matches this secret")


def main(argv: list[str]) -> int:
    """Command line: verify the given delivery, or the specification's test vector."""
    if not argv:
        argv = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "-", "1614265330"]
        body = b'{"test": 2432232314}'
    elif len(argv) in (5, 6):
        with open(argv[4], "rb") as f:
            body = f.read()
    else:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    secret, msg_id, ts, signature = argv[:4]
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": signature}
    try:
        verify(secret, headers, body, now=float(argv[5]) if len(argv) == 6 else None)
    except InvalidSignature as exc:
        print(f"invalid: {exc}")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
