"""API key tokens: shape, hashing and verification."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.api.keys import ApiKey, hash_secret, new_key, parse_token, revoked, verify


def test_token_shape_and_stored_hash() -> None:
    """A token is cw_<16>.<40> base62 and the key stores only the SHA-256 of its secret."""
    key, token = new_key("ws_a", "ci")
    key_id, secret = parse_token(token) or ("", "")
    assert (key_id, key.workspace_id, key.name) == (key.id, "ws_a", "ci")
    assert len(secret) == 40
    assert key.hash == hash_secret(secret)
    assert secret not in key.hash


def test_verify_accepts_only_the_right_live_secret() -> None:
    """verify returns the key for its own token and None for a wrong secret, unknown id or revoked key."""
    key, token = new_key("ws_a")
    table = {key.id: key}
    assert verify(token, table) == key
    assert verify(token[:-1] + ("x" if token[-1] != "x" else "y"), table) is None
    _other, other_token = new_key("ws_a")
    assert verify(other_token, table) is None
    assert verify(token, {key.id: revoked(key)}) is None


@pytest.mark.parametrize("token", ["", "cw_", "cw_abc.def", "Bearer x", "cw_" + "a" * 16 + "." + "b" * 39,
                                   "cw_" + "a" * 16 + ".." + "b" * 40, "cw_" + "a" * 16 + "." + "b" * 40 + "\n"])
def test_malformed_tokens_are_not_parsed(token: str) -> None:
    """Anything not exactly cw_<16 base62>.<40 base62> is refused before any lookup."""
    assert parse_token(token) is None


def test_workspace_ids_are_validated() -> None:
    """A workspace id with path or control characters cannot get a key."""
    with pytest.raises(ValueError, match="workspace"):
        new_key("ws/../x")


def test_avro_round_trip() -> None:
    """to_avro/from_avro keep every field, including revoked."""
    key = replace(new_key("ws_a", "n")[0], revoked=True)
    assert ApiKey.from_avro(key.to_avro()) == key
