"""Signing properties the example tests leave open: rotation and the signed id and timestamp."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.dispatcher.signing import SignatureError, new_secret, signed_headers, verify

SECRETS = [new_secret() for _ in range(4)]
OUTSIDER = new_secret()

msg_ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@given(
    signers=st.lists(st.sampled_from(SECRETS), min_size=1, max_size=4, unique=True),
    body=st.binary(max_size=256),
    msg_id=msg_ids,
    timestamp=st.integers(min_value=0, max_value=2**40),
    data=st.data(),
)
def test_any_signing_secret_verifies_and_no_other_does(
    signers: list[str], body: bytes, msg_id: str, timestamp: int, data: st.DataObject
) -> None:
    """Signed during a rotation, each secret alone verifies; a secret not among the signers never does."""
    headers = signed_headers(signers, msg_id, timestamp, body)
    verify([data.draw(st.sampled_from(signers))], headers, body, now=timestamp)
    others = [s for s in [*SECRETS, OUTSIDER] if s not in signers]
    with pytest.raises(SignatureError) as err:
        verify(others, headers, body, now=timestamp)
    assert err.value.reason == "no_match"


@given(body=st.binary(max_size=256), msg_id=msg_ids, other_id=msg_ids,
       timestamp=st.integers(min_value=1, max_value=2**40), shift=st.integers(min_value=1, max_value=300))
def test_the_id_and_timestamp_are_signed(body: bytes, msg_id: str, other_id: str, timestamp: int, shift: int) -> None:
    """Swapping in another webhook-id, or a timestamp still inside the window, breaks the signature."""
    headers = signed_headers(SECRETS[:1], msg_id, timestamp, body)
    if other_id != msg_id:
        with pytest.raises(SignatureError):
            verify(SECRETS[:1], {**headers, "webhook-id": other_id}, body, now=timestamp)
    with pytest.raises(SignatureError) as err:
        verify(SECRETS[:1], {**headers, "webhook-timestamp": str(timestamp + shift)}, body, now=timestamp)
    assert err.value.reason == "no_match"
