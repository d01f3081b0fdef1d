"""Shared fixtures for the verification tests: real vectors, parsed once, and a simulated TDX."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from attestation.collateral import Collateral
from attestation.simulated import SimulatedTdx
from tests.vectors import TdxCase, tdx_case

# A fixed time for the simulated platform, so its certificates and collateral are deterministic.
SIM_NOW = 1_760_000_000


@pytest.fixture(scope="session")
def v4_case() -> TdxCase:
    return tdx_case("v4-uptodate")


@pytest.fixture(scope="session")
def v4_collateral(v4_case: TdxCase) -> Collateral:
    return Collateral.from_json(v4_case.collateral_json)


@pytest.fixture(scope="session")
def sim() -> SimulatedTdx:
    """A deterministic simulated platform (its own root; only trusted when passed)."""
    return SimulatedTdx.generate(b"shroud verify tests", now=SIM_NOW)


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 as Intel encodes it in collateral and quotes: raw r || s."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def tcb_signing_key(sim: SimulatedTdx) -> ec.EllipticCurvePrivateKey:
    # The simulator keeps its keys private; the tests that need a re-signed collateral body
    # (a genuine signature over a changed body) reach for the TCB signing key here, once.
    return sim._keys.tcb_signing


def root_key(sim: SimulatedTdx) -> ec.EllipticCurvePrivateKey:
    return sim._keys.root


def resign(
    sim: SimulatedTdx,
    collateral: dict[str, str],
    *,
    tcb_info: dict[str, Any] | None = None,
    qe_identity: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The collateral with a changed TCB Info / QE Identity, validly signed by the TCB signer."""
    out = dict(collateral)
    key = tcb_signing_key(sim)
    if tcb_info is not None:
        out["tcb_info"] = json.dumps(tcb_info, separators=(",", ":"))
        out["tcb_info_signature"] = sign_raw(key, out["tcb_info"].encode()).hex()
    if qe_identity is not None:
        out["qe_identity"] = json.dumps(qe_identity, separators=(",", ":"))
        out["qe_identity_signature"] = sign_raw(key, out["qe_identity"].encode()).hex()
    return out
