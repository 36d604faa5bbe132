"""Standard Webhooks signatures (https://www.standardwebhooks.com/): signing deliveries, verifying them.

A signature is HMAC-SHA256 over ``"{webhook-id}.{webhook-timestamp}.{body}"`` keyed with the
base64-decoded secret, sent as ``v1,<base64>``; during a rotation every live secret signs and the
signatures are space-separated in one ``webhook-signature`` header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"  # noqa: S105  # the spec's marker, not a secret
SIGNATURE_VERSION = "v1"
_V1 = SIGNATURE_VERSION + ","
DEFAULT_TOLERANCE_S = 300  # the spec's suggested window; wider lets captured requests be replayed longer

HEADER_ID = "webhook-id"
HEADER_TIMESTAMP = "webhook-timestamp"
HEADER_SIGNATURE = "webhook-signature"


class SignatureError(Exception):
    """A delivery failed verification; ``reason`` is a machine-readable code.

    Codes: ``missing_header``, ``bad_timestamp``, ``too_old``, ``too_new``, ``no_match``, ``bad_secret``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def new_secret() -> str:
    """Return a fresh signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode("ascii")


@lru_cache(maxsize=4096)
def secret_key(secret: str) -> bytes:
    """Return the HMAC key of a ``whsec_`` secret (prefix optional, as in the spec's libraries)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        # Tolerate unpadded base64, as the reference libraries do.
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise SignatureError("bad_secret", "not base64") from exc
    if not key:
        raise SignatureError("bad_secret", "empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    # hmac.digest is the one-shot C path: no HMAC object per delivery.
    return hmac.digest(key, b"%s.%d.%s" % (msg_id.encode(), timestamp, body), hashlib.sha256)


def _v1(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    return _V1 + binascii.b2a_base64(_digest(key, msg_id, timestamp, body), newline=False).decode("ascii")


def sign(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value: one ``v1,<b64>`` per secret, space-separated, in order."""
    if not secrets:
        raise SignatureError("bad_secret", "no secret to sign with")
    if len(secrets) == 1:  # the common case: no rotation in progress
        return _v1(secret_key(secrets[0]), msg_id, timestamp, body)
    return " ".join([_v1(secret_key(s), msg_id, timestamp, body) for s in secrets])


def signed_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Return the three Standard Webhooks headers for one delivery attempt."""
    return {
        HEADER_ID: msg_id,
        HEADER_TIMESTAMP: str(timestamp),
        HEADER_SIGNATURE: sign(secrets, msg_id, timestamp, body),
    }


def verify(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Return if a ``v1`` signature matches a secret within the time window, else raise SignatureError."""
    lowered = {k.lower(): v for k, v in headers.items()}
    msg_id = lowered.get(HEADER_ID)
    ts_text = lowered.get(HEADER_TIMESTAMP)
    sig_header = lowered.get(HEADER_SIGNATURE)
    if not (msg_id and ts_text and sig_header):
        raise SignatureError("missing_header")
    if not ts_text.isascii() or not ts_text.isdigit():
        raise SignatureError("bad_timestamp", ts_text[:32])
    timestamp = int(ts_text)
    current = time.time() if now is None else now
    if timestamp < current - tolerance_s:
        raise SignatureError("too_old")
    if timestamp > current + tolerance_s:
        raise SignatureError("too_new")

    offered: list[bytes] = []
    for part in sig_header.split(" "):
        version, _, b64 = part.partition(",")
        if version != SIGNATURE_VERSION or not b64:
            continue  # other schemes (v1a, future versions) are for other verifiers
        try:
            offered.append(base64.b64decode(b64, validate=True))
        except binascii.Error:
            continue
    matched = False
    for secret in secrets:
        expected = _digest(secret_key(secret), msg_id, timestamp, body)
        for candidate in offered:
            # No early exit: the time taken must not depend on which pair matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError("no_match")
