"""Shared fixtures for the verification tests: real vectors, parsed once, and a simulated TDX."""

from __future__ import annotations

import pytest

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
