"""Key schedule against published vectors (RFC 5869, RFC 8448) and its own invariants."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shroud_sdk.channel import constants
from shroud_sdk.channel.keyschedule import (
    derive_session_keys,
    export_keying_material,
    finished_mac,
    hkdf_expand,
    hkdf_expand_label,
    hkdf_extract,
)
from tests.vectors import local_vector


def _cases(name: str, key: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads(local_vector(name))[key]
    return cases


@pytest.mark.parametrize("case", _cases("rfc5869.json", "cases"), ids=lambda c: c["name"])
def test_hkdf_matches_rfc5869(case: dict[str, Any]) -> None:
    prk = hkdf_extract(bytes.fromhex(case["salt"]), bytes.fromhex(case["ikm"]))
    assert prk.hex() == case["prk"]
    okm = hkdf_expand(prk, bytes.fromhex(case["info"]), case["length"])
    assert okm.hex() == case["okm"]


@pytest.mark.parametrize("case", _cases("rfc8448.json", "extract"), ids=lambda c: c["name"])
def test_extract_matches_rfc8448(case: dict[str, Any]) -> None:
    prk = hkdf_extract(bytes.fromhex(case["salt"]), bytes.fromhex(case["ikm"]))
    assert prk.hex() == case["prk"]


@pytest.mark.parametrize("case", _cases("rfc8448.json", "expand_label"), ids=lambda c: c["name"])
def test_expand_label_matches_rfc8448(case: dict[str, Any]) -> None:
    out = hkdf_expand_label(
        bytes.fromhex(case["secret"]),
        case["label"].encode(),
        bytes.fromhex(case["context"]),
        case["length"],
        prefix=b"tls13 ",
    )
    assert out.hex() == case["expected"]


def test_shroud_prefix_separates_from_tls13() -> None:
    secret = bytes(32)
    assert hkdf_expand_label(secret, b"key", b"", 16) != hkdf_expand_label(
        secret, b"key", b"", 16, prefix=b"tls13 "
    )


def test_session_keys_are_all_distinct_and_transcript_bound() -> None:
    keys = derive_session_keys(b"\x01" * 32, b"\x02" * 32)
    other = derive_session_keys(b"\x01" * 32, b"\x03" * 32)
    values = [
        keys.c2b_key,
        keys.b2c_key,
        keys.finished_key,
        keys.exporter_secret,
        other.c2b_key,
        other.b2c_key,
    ]
    assert len(set(values)) == len(values)
    assert keys.c2b_iv != keys.b2c_iv
    assert len(keys.c2b_key) == constants.AEAD_KEY_LEN
    assert len(keys.b2c_iv) == constants.AEAD_IV_LEN


def test_session_keys_follow_the_spec_formula() -> None:
    shared, th = b"\x11" * 32, b"\x22" * 32
    secret = hkdf_extract(th, shared)
    keys = derive_session_keys(shared, th)
    assert keys.c2b_key == hkdf_expand_label(secret, b"c2b key", b"", 32)
    assert keys.b2c_iv == hkdf_expand_label(secret, b"b2c iv", b"", 12)
    assert keys.finished_key == hkdf_expand_label(secret, b"finished", b"", 32)
    assert finished_mac(keys.finished_key, th) != finished_mac(keys.finished_key, b"\x23" * 32)


def test_session_keys_repr_hides_secrets() -> None:
    keys = derive_session_keys(b"\x01" * 32, b"\x02" * 32)
    assert keys.c2b_key.hex() not in repr(keys)
    assert repr(keys.c2b_key) not in repr(keys)


def test_exporter_depends_on_label_and_context() -> None:
    secret = b"\x05" * 32
    base = export_keying_material(secret, b"app", b"ctx", 32)
    assert base != export_keying_material(secret, b"app2", b"ctx", 32)
    assert base != export_keying_material(secret, b"app", b"ctx2", 32)


def test_expand_label_refuses_out_of_range_arguments() -> None:
    with pytest.raises(ValueError, match="out of range"):
        hkdf_expand_label(b"\x00" * 32, b"x" * 250, b"", 32)
    with pytest.raises(ValueError, match="out of range"):
        hkdf_expand_label(b"\x00" * 32, b"key", b"c" * 256, 32)
