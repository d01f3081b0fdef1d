"""Signed usage: tampering, moving usage to another stream or session, and the END path."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import RecordType
from shroud_sdk.channel.events import StreamEnded
from shroud_sdk.channel.usage import (
    SignedUsage,
    Usage,
    sign_usage,
    usage_to_be_signed,
    verify_usage,
)
from shroud_sdk.errors import IntegrityError, ProtocolError
from tests.channel.doubles import connected_pair, deliver

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = KEY.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
TH = b"\x42" * 32
USAGE = Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42)


def test_signed_usage_verifies() -> None:
    verify_usage(PUBLIC, TH, 3, sign_usage(KEY, TH, 3, USAGE))


def test_to_be_signed_follows_the_spec() -> None:
    assert usage_to_be_signed(TH, 3, USAGE) == cbor.encode(["shroud/1 usage", TH, 3, 12, 30, 42])


def test_tampered_usage_fails() -> None:
    signed = sign_usage(KEY, TH, 3, USAGE)
    inflated = replace(signed, usage=Usage(12, 300, 312))
    with pytest.raises(IntegrityError) as info:
        verify_usage(PUBLIC, TH, 3, inflated)
    assert info.value.check == "usage-signature"


def test_usage_from_another_stream_fails() -> None:
    with pytest.raises(IntegrityError):
        verify_usage(PUBLIC, TH, 4, sign_usage(KEY, TH, 3, USAGE))


def test_usage_from_another_session_fails() -> None:
    with pytest.raises(IntegrityError):
        verify_usage(PUBLIC, b"\x43" * 32, 3, sign_usage(KEY, TH, 3, USAGE))


def test_usage_signed_by_another_key_fails() -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(IntegrityError):
        verify_usage(PUBLIC, TH, 3, sign_usage(other, TH, 3, USAGE))


def test_flipped_signature_bit_fails() -> None:
    signed = sign_usage(KEY, TH, 3, USAGE)
    flipped = replace(signed, signature=bytes([signed.signature[0] ^ 1]) + signed.signature[1:])
    with pytest.raises(IntegrityError):
        verify_usage(PUBLIC, TH, 3, flipped)


def test_usage_metadata_round_trips() -> None:
    signed = sign_usage(KEY, TH, 3, USAGE)
    assert SignedUsage.from_metadata(signed.to_metadata()) == signed


@pytest.mark.parametrize(
    "value",
    [
        {"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "sig": b"\x00" * 64},
        {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": -2}, "sig": b""},
        {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}, "sig": b"1"},
        {"usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": True}},
        [1, 2],
    ],
    ids=["missing-count", "negative", "short-sig", "no-sig", "array"],
)
def test_malformed_usage_metadata_is_rejected(value: object) -> None:
    with pytest.raises(ProtocolError):
        SignedUsage.from_metadata(cbor.encode(value))


@pytest.mark.parametrize("counts", [(-1, 0, 0), (0, 1 << 63, 0), (True, 0, 0)])
def test_usage_counts_are_validated(counts: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="token counts"):
        Usage(*counts)


# -- through the connection -----------------------------------------------------------------


def test_usage_in_end_is_signed_and_verified_by_client() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    client.end_stream(sid)
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    bridge.end_stream(sid, USAGE)
    *_, ended = deliver(bridge, client)
    assert isinstance(ended, StreamEnded)
    assert ended.usage is not None
    assert ended.usage.usage == USAGE
    # Third parties (the operator) can check it with the key bound into REPORTDATA.
    verify_usage(bridge._usage_key, client.transcript_hash, sid, ended.usage)


def test_usage_in_end_is_cleartext_for_the_operator() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    bridge.end_stream(sid, USAGE)
    _, end = bridge.data_to_send()
    assert b"completion_tokens" in end


def test_end_with_usage_signed_for_another_stream_is_rejected() -> None:
    client, bridge = connected_pair()
    first = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    second = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(first, 200, [])
    deliver(bridge, client)
    signed = sign_usage(bridge._config.usage_signing_key, bridge.transcript_hash, second, USAGE)
    assert bridge._sealer is not None
    with pytest.raises(IntegrityError) as info:
        client.receive_data(bridge._sealer.seal(RecordType.END, first, b"", signed.to_metadata()))
    assert info.value.check == "usage-signature"


def test_end_with_usage_from_another_session_is_rejected() -> None:
    client, bridge = connected_pair()
    _, other_bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    bridge.send_response(sid, 200, [])
    deliver(bridge, client)
    signed = sign_usage(bridge._config.usage_signing_key, other_bridge.transcript_hash, sid, USAGE)
    assert bridge._sealer is not None
    with pytest.raises(IntegrityError):
        client.receive_data(bridge._sealer.seal(RecordType.END, sid, b"", signed.to_metadata()))


def test_client_cannot_send_usage_metadata() -> None:
    client, bridge = connected_pair()
    sid = client.send_request("POST", "/v1/chat/completions", [], disclosed={})
    deliver(client, bridge)
    signed = sign_usage(KEY, bridge.transcript_hash, sid, USAGE)
    assert client._sealer is not None
    with pytest.raises(ProtocolError) as info:
        bridge.receive_data(client._sealer.seal(RecordType.END, sid, b"", signed.to_metadata()))
    assert info.value.check == "metadata"
