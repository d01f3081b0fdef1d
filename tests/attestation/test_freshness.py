"""Collateral freshness: ordering real Intel collateral, and the policy bounds on its age.

The rollback these guard against: collateral from before a TCB recovery or a revocation stays
inside its validity window for up to 30 days, so a bridge or a cache can serve it. Real Intel
parts (TCB Info, QE Identity, CRLs) are signed separately, so a set can be assembled from
parts of different ages: the tests below do that with the shared vectors' real CRLs.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509

from attestation.collateral import Collateral
from attestation.freshness import CollateralFreshness, newer_collateral
from attestation.policy import Policy
from attestation.simulated import SimulatedTdx
from attestation.validate import DEFAULT_MAX_COLLATERAL_AGE_SECONDS
from attestation.verify import verify_quote
from tests.vectors import TDX_CASES, tdx_case

ANY = {"allow_unpinned_measurements": True}
NOW = 1_760_000_000
DAY = 86_400


def real(name: str) -> Collateral:
    return Collateral.from_json(tdx_case(name).collateral_json)


def this_update(der: bytes) -> int:
    return int(x509.load_der_x509_crl(der).last_update_utc.timestamp())


# --- ordering real collateral ----------------------------------------------------------------


def test_freshness_reads_every_part_of_real_collateral() -> None:
    c = real("v4-uptodate")
    f = CollateralFreshness.of(c)
    assert f.fmspc == bytes.fromhex("b0c06f000000")
    assert f.tcb_info == (17, c.tcb_info.issue_date)
    assert f.qe_identity == (17, c.qe_identity.issue_date)
    assert f.pck_crl == this_update(c.pck_crl)
    assert f.root_ca_crl == this_update(c.root_ca_crl)


def test_an_older_real_pck_crl_is_not_newer_and_a_newer_one_is() -> None:
    own = real("v4-uptodate")  # PCK CRL issued 2025-06-19
    old_crl = real("neg-debug-td").pck_crl  # a real Intel PCK CRL issued 2023-06-08
    rolled_back = dataclasses.replace(own, pck_crl=old_crl)
    assert newer_collateral(own, rolled_back) is own
    assert CollateralFreshness.of(rolled_back).older_parts(CollateralFreshness.of(own)) == [
        "pck_crl"
    ]
    # The other way round the offered set is as new everywhere and newer in its CRL.
    assert newer_collateral(rolled_back, own) is own


def test_a_set_newer_in_one_part_but_older_in_another_is_not_taken() -> None:
    own = real("v4-uptodate")
    mixed = dataclasses.replace(
        real("v4-uptodate"), pck_crl=real("neg-debug-td").pck_crl, root_ca_crl=own.root_ca_crl
    )
    newer_tcb = dataclasses.replace(
        mixed, tcb_info=dataclasses.replace(mixed.tcb_info, tcb_evaluation_data_number=99)
    )
    assert newer_collateral(own, newer_tcb) is own


def test_collateral_for_another_platform_family_is_never_newer() -> None:
    own = real("v4-uptodate")  # FMSPC B0C06F000000, issued 2025-06-19
    other = real("neg-outofdate")  # FMSPC 00806F050000, issued 2025-07-07: later everywhere
    assert not CollateralFreshness.of(other).older_parts(CollateralFreshness.of(own))
    assert newer_collateral(own, other) is own


def test_identical_collateral_keeps_the_callers_own() -> None:
    own, same = real("v5-uptodate"), real("v4-dstack-eventlog")
    assert own == same
    assert own is not same
    assert newer_collateral(own, same) is own


def test_offered_collateral_with_an_unparseable_crl_is_not_newer() -> None:
    own = real("v4-uptodate")
    broken = dataclasses.replace(own, pck_crl=b"\x30\x03\x02\x01\x01")
    assert newer_collateral(own, broken) is own


# --- evaluation data number: simulated TCB recovery ------------------------------------------


def test_a_tcb_recovery_makes_the_offered_set_newer_whatever_its_dates() -> None:
    platform = SimulatedTdx.generate(b"freshness", now=NOW)
    before = Collateral.from_json(platform.collateral(now=NOW))
    after = Collateral.from_json(platform.collateral(now=NOW - DAY, tcb_evaluation_data_number=18))
    # Issued a day earlier, but one TCB recovery later: the TCB Info and QE Identity are newer;
    # its CRLs are older, so the set as a whole does not supersede.
    assert newer_collateral(before, after) is before
    recovered = dataclasses.replace(after, root_ca_crl=before.root_ca_crl, pck_crl=before.pck_crl)
    assert newer_collateral(before, recovered) is recovered
    assert newer_collateral(recovered, before) is recovered


# --- policy bounds ---------------------------------------------------------------------------


def test_default_collateral_age_admits_every_real_vector_at_its_now() -> None:
    # The vectors' `now` lies at the very end of their collateral's 30-day validity.
    assert DEFAULT_MAX_COLLATERAL_AGE_SECONDS == 30 * DAY
    assert Policy(**ANY).max_collateral_age_seconds == DEFAULT_MAX_COLLATERAL_AGE_SECONDS
    for name in TDX_CASES:
        case = tdx_case(name)
        report = verify_quote(case.quote, real(name), now=case.now)
        assert report.collateral_issue_date is not None
        assert case.now - report.collateral_issue_date <= DEFAULT_MAX_COLLATERAL_AGE_SECONDS
        result = Policy(**ANY).evaluate(report)
        assert result.ok is case.expected["expect_accept_default_policy"], result.violations
        assert "max_collateral_age_seconds" not in [v.field for v in result.violations]


def test_collateral_age_counts_the_pck_crl() -> None:
    # Fresh TCB Info and QE Identity, with the PCK CRL of twelve days before: inside every
    # validity window, so only the age bound can notice.
    platform = SimulatedTdx.generate(b"freshness-age", now=NOW)
    fresh = Collateral.from_json(platform.collateral(now=NOW))
    stale_crl = Collateral.from_json(platform.collateral(now=NOW - 12 * DAY)).pck_crl
    collateral = dataclasses.replace(fresh, pck_crl=stale_crl)
    report = verify_quote(
        platform.quote(bytes(64)), collateral, now=NOW, trusted_roots=[platform.root_certificate]
    )
    assert report.ok, report.failed
    assert report.collateral_issue_date == this_update(stale_crl)
    roots = (platform.root_pem.decode(),)
    policy = Policy(max_collateral_age_seconds=7 * DAY, trusted_roots=roots, **ANY)
    violations = policy.evaluate(report).violations
    assert [v.field for v in violations] == ["max_collateral_age_seconds"]
    assert "PCK CRL" in violations[0].expected
    assert violations[0].actual == f"{12 * DAY + 3600} s"


@pytest.mark.parametrize(("minimum", "ok"), [(17, True), (18, False)])
def test_min_tcb_evaluation_data_number_refuses_collateral_from_before_a_recovery(
    minimum: int, ok: bool
) -> None:
    case = tdx_case("v4-uptodate")  # Intel's collateral: tcbEvaluationDataNumber 17
    report = verify_quote(case.quote, real("v4-uptodate"), now=case.now)
    assert report.tcb_evaluation_data_number == 17
    result = Policy(min_tcb_evaluation_data_number=minimum, **ANY).evaluate(report)
    assert result.ok is ok
    if not ok:
        (violation,) = result.violations
        assert violation.field == "min_tcb_evaluation_data_number"
        assert (violation.actual, ">= 18" in violation.expected) == ("17", True)


def test_min_tcb_evaluation_data_number_counts_the_qe_identity_too() -> None:
    platform = SimulatedTdx.generate(b"freshness-eval", now=NOW)
    new = Collateral.from_json(platform.collateral(now=NOW, tcb_evaluation_data_number=18))
    old = Collateral.from_json(platform.collateral(now=NOW))
    mixed = dataclasses.replace(
        new,
        qe_identity=old.qe_identity,
        qe_identity_signature=old.qe_identity_signature,
        qe_identity_issuer_chain=old.qe_identity_issuer_chain,
    )
    roots = [platform.root_certificate]
    report = verify_quote(platform.quote(bytes(64)), mixed, now=NOW, trusted_roots=roots)
    assert report.ok, report.failed
    assert report.tcb_evaluation_data_number == 17
    policy = Policy(
        min_tcb_evaluation_data_number=18, trusted_roots=(platform.root_pem.decode(),), **ANY
    )
    assert [v.field for v in policy.evaluate(report).violations] == [
        "min_tcb_evaluation_data_number"
    ]


def test_policy_keys_round_trip_through_toml() -> None:
    policy = Policy.from_toml(
        "allow_unpinned_measurements = true\n"
        "min_tcb_evaluation_data_number = 18\n"
        "max_collateral_age_seconds = 172800\n"
    )
    assert (policy.min_tcb_evaluation_data_number, policy.max_collateral_age_seconds) == (
        18,
        172800,
    )
    assert Policy.from_toml(policy.to_toml()) == policy
    with pytest.raises(Exception, match="min_tcb_evaluation_data_number"):
        Policy.from_toml("allow_unpinned_measurements = true\nmin_tcb_evaluation_data_number = -1")
