"""``VerificationReport.valid_until``: the last second every window the verdict relied on holds.

A client that caches an accepted verification (``shroud_sdk.verifier``) must not keep it past
this second, so it has to be exactly the earliest end among the collateral, CRL and certificate
windows: one second later the same verification fails.
"""

from __future__ import annotations

import pytest

from attestation.collateral import Collateral
from attestation.trust import intel_sgx_root_ca
from attestation.verify import VerifiedCollateral, verify_collateral, verify_quote
from tests.vectors import tdx_case


@pytest.mark.parametrize("name", ["v4-uptodate", "v5-uptodate"])
def test_valid_until_is_the_last_second_the_verdict_holds(name: str) -> None:
    case = tdx_case(name)
    prepared = VerifiedCollateral.prepare(
        Collateral.from_json(case.collateral_json), trusted_roots=[intel_sgx_root_ca()]
    )
    report = verify_quote(case.quote, prepared, now=case.now, trusted_roots=[intel_sgx_root_ca()])
    assert report.ok
    assert report.valid_until is not None
    assert report.valid_until >= case.now
    last = verify_quote(
        case.quote, prepared, now=report.valid_until, trusted_roots=[intel_sgx_root_ca()]
    )
    assert last.ok
    after = verify_quote(
        case.quote, prepared, now=report.valid_until + 1, trusted_roots=[intel_sgx_root_ca()]
    )
    assert not after.ok
    assert any("expired" in c.detail or "stale" in c.detail for c in after.failed), after.failed


def test_collateral_only_verification_reports_its_end_too() -> None:
    case = tdx_case("v4-uptodate")
    collateral = Collateral.from_json(case.collateral_json)
    report = verify_collateral(collateral, now=case.now, trusted_roots=[intel_sgx_root_ca()])
    assert report.ok
    assert report.valid_until is not None
    assert not verify_collateral(
        collateral, now=report.valid_until + 1, trusted_roots=[intel_sgx_root_ca()]
    ).ok
