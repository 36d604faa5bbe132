"""Standard Webhooks signing: the spec's published vector, interop with the reference library, properties."""

from __future__ import annotations

import base64
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.dispatcher.signing import SignatureError, new_secret, sign, signed_headers, verify

# Published in standard-webhooks/standard-webhooks, libraries/{python,go,javascript} tests ("sign function").
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# The same libraries' "invalid signature" case: one base64 character off.
SPEC_WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="


def test_spec_vector_signature() -> None:
    """Signing the spec's fixed secret, id, timestamp and payload gives the published signature."""
    assert sign([SPEC_SECRET], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_spec_vector_signature_without_prefix() -> None:
    """A secret without the whsec_ prefix signs the same way, as the reference libraries accept."""
    assert (
        sign([SPEC_SECRET.removeprefix("whsec_")], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    )


def test_spec_vector_verifies_and_wrong_one_does_not() -> None:
    """verify accepts the published signature at its timestamp and refuses the published wrong one."""
    headers = {"webhook-id": SPEC_MSG_ID, "webhook-timestamp": str(SPEC_TIMESTAMP)}
    verify([SPEC_SECRET], {**headers, "webhook-signature": SPEC_SIGNATURE}, SPEC_BODY, now=SPEC_TIMESTAMP)
    with pytest.raises(SignatureError) as err:
        verify(
            [SPEC_SECRET],
            {**headers, "webhook-signature": SPEC_WRONG_SIGNATURE},
            SPEC_BODY,
            now=SPEC_TIMESTAMP,
        )
    assert err.value.reason == "no_match"


def test_reference_library_accepts_our_headers() -> None:
    """standardwebhooks.Webhook(secret).verify accepts our headers, for each secret of a rotation."""
    old, new = new_secret(), new_secret()
    body = b'{"id":"evt_1","type":"click","data":{}}'
    headers = signed_headers([new, old], "evt_1", int(time.time()), body)
    assert Webhook(new).verify(body, headers) == {"id": "evt_1", "type": "click", "data": {}}
    assert Webhook(old).verify(body, headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_one_signature_per_secret_in_order() -> None:
    """Two secrets give two space-separated v1 signatures, the first from the first secret."""
    a, b = new_secret(), new_secret()
    both = sign([a, b], "m", 1, b"x").split(" ")
    assert both == [sign([a], "m", 1, b"x"), sign([b], "m", 1, b"x")]
    assert all(s.startswith("v1,") for s in both)


def test_new_secret_shape() -> None:
    """new_secret is whsec_ plus base64 of 32 bytes, and never repeats."""
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert secret != new_secret()


@pytest.mark.parametrize(("offset", "reason"), [(-301, "too_old"), (301, "too_new")], ids=["old", "new"])
def test_timestamp_outside_window_refused(offset: int, reason: str) -> None:
    """A correctly signed delivery whose timestamp is more than 5 minutes away is refused."""
    secret, now = new_secret(), 1_700_000_000
    headers = signed_headers([secret], "m", now + offset, b"{}")
    with pytest.raises(SignatureError) as err:
        verify([secret], headers, b"{}", now=now)
    assert err.value.reason == reason
    verify([secret], headers, b"{}", now=now + offset)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"webhook-timestamp": "1", "webhook-signature": "v1,AAAA"}, "missing_header"),
        ({"webhook-id": "m", "webhook-timestamp": "1e3", "webhook-signature": "v1,AAAA"}, "bad_timestamp"),
        ({"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "v2,AAAA v1,%%%"}, "no_match"),
    ],
)
def test_malformed_headers_refused(headers: dict[str, str], reason: str) -> None:
    """Missing headers, a non-integer timestamp and undecodable or foreign signatures are refused by code."""
    with pytest.raises(SignatureError) as err:
        verify([new_secret()], headers, b"{}", now=1)
    assert err.value.reason == reason


SECRET = new_secret()


@given(
    body=st.binary(min_size=1, max_size=512),
    msg_id=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**40),
    flip=st.integers(min_value=0),
)
def test_verify_of_sign_holds_and_a_flipped_byte_fails(
    body: bytes, msg_id: str, timestamp: int, flip: int
) -> None:
    """verify(sign(x)) passes for any body, id and time, and fails once any one body byte is flipped."""
    headers = signed_headers([SECRET], msg_id, timestamp, body)
    verify([SECRET], headers, body, now=timestamp)
    tampered = bytearray(body)
    tampered[flip % len(tampered)] ^= 0x01
    with pytest.raises(SignatureError):
        verify([SECRET], headers, bytes(tampered), now=timestamp)
