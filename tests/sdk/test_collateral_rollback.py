"""A bridge cannot roll collateral back when the client has a collateral source of its own.

The red-team finding (issue 10, finding 4): a bridge shipping 20-day-old collateral, still
inside its validity window, was accepted as UpToDate while the client's own source already
said OutOfDate (after a TCB recovery) or that the PCK was revoked. The client now keeps its own
collateral unless the bridge's supersedes it (``attestation.freshness``), so the refusal comes
from the check the newer collateral fails, and names it. Real signed collateral throughout,
from the simulated platform, verified by the real verifier.
"""

from __future__ import annotations

import json
import time

import pytest

from attestation.collateral import Collateral
from attestation.errors import CollateralFetchError
from attestation.policy import MeasurementPins, Policy
from attestation.quote import Quote
from attestation.simulated import SimulatedTd, SimulatedTdx
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.errors import AttestationFailedError
from shroud_sdk.verifier import AttestationReport, AttestationVerifier

NOW = int(time.time())
DAY = 86_400
SIM = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
REPORT_DATA = bytes(range(64))


@pytest.fixture(scope="module")
def platform() -> SimulatedTdx:
    return SimulatedTdx.generate(b"rollback-tests", now=NOW)


@pytest.fixture(scope="module")
def td(platform: SimulatedTdx) -> SimulatedTd:
    return platform.td()


class OwnSource:
    """The client's own collateral source (a CollateralCache in production)."""

    def __init__(self, collateral: Collateral | None) -> None:
        self.collateral = collateral
        self.asked = 0

    def get_for_quote(self, quote: Quote, now: int) -> Collateral:
        self.asked += 1
        if self.collateral is None:
            raise CollateralFetchError("PCS unreachable (connection refused)")
        return self.collateral


def policy(platform: SimulatedTdx, td: SimulatedTd, **changes: object) -> Policy:
    fields: dict[str, object] = {
        "trusted_roots": (platform.root_pem.decode("ascii"),),
        "measurements": MeasurementPins(mr_td=frozenset({td.measurements.mr_td.hex()})),
        "allow_simulated_tee": True,
    }
    fields.update(changes)
    return Policy(**fields)


def shipped(platform: SimulatedTdx, td: SimulatedTd, **collateral: object) -> Evidence:
    """Evidence whose collateral the bridge chose: by default issued 20 days ago."""
    collateral.setdefault("now", NOW - 20 * DAY)
    data = json.dumps(platform.collateral(**collateral)).encode()  # type: ignore[arg-type]
    return Evidence("tdx", td.quote(REPORT_DATA), (), data)


def own(platform: SimulatedTdx, **collateral: object) -> OwnSource:
    collateral.setdefault("now", NOW)
    return OwnSource(Collateral.from_json(platform.collateral(**collateral)))  # type: ignore[arg-type]


def refusal(verifier: AttestationVerifier, evidence: Evidence) -> AttestationFailedError:
    with pytest.raises(AttestationFailedError) as info:
        verifier(evidence, SIM)
    return info.value


def report_of(error: AttestationFailedError) -> AttestationReport:
    assert isinstance(error.report, AttestationReport)
    return error.report


# --- the measured rollbacks --------------------------------------------------------------------


def test_old_collateral_from_before_a_tcb_recovery_is_refused_naming_the_tcb_check(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    source = own(platform, tcb_status="OutOfDate", tcb_evaluation_data_number=18)
    verifier = AttestationVerifier(policy(platform, td), collateral_source=source)
    error = refusal(verifier, shipped(platform, td))
    assert error.check == "policy"
    assert "allowed_tcb_statuses: expected UpToDate, got OutOfDate" in str(error)
    assert report_of(error).collateral_origin == "source"
    assert report_of(error).verification.tcb_evaluation_data_number == 18


def test_old_collateral_from_before_a_revocation_is_refused_naming_pck_revocation(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(
        policy(platform, td), collateral_source=own(platform, revoke_pck=True)
    )
    error = refusal(verifier, shipped(platform, td))
    assert error.check == "verification"
    assert [c.name for c in report_of(error).verification.failed] == ["pck_revocation"]
    assert "pck_revocation (" in str(error)
    assert "is revoked by the PCK CRL" in str(error)


def test_without_a_source_of_its_own_the_client_can_only_bound_the_age(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # What the finding measured, kept visible: with nothing newer to compare against, a
    # 20-day-old set is accepted by default; the policy bounds are what is left.
    assert AttestationVerifier(policy(platform, td))(shipped(platform, td), SIM).report.ok
    tight = AttestationVerifier(policy(platform, td, max_collateral_age_seconds=7 * DAY))
    error = refusal(tight, shipped(platform, td))
    assert error.check == "policy"
    assert "max_collateral_age_seconds" in str(error)
    recovered = AttestationVerifier(policy(platform, td, min_tcb_evaluation_data_number=18))
    error = refusal(recovered, shipped(platform, td))
    assert "min_tcb_evaluation_data_number" in str(error)


# --- which collateral is used ------------------------------------------------------------------


def test_the_bridges_collateral_is_used_when_it_supersedes_the_clients(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # A client cache from ten days ago; the bridge fetched after the latest TCB recovery.
    source = own(platform, now=NOW - 10 * DAY)
    verifier = AttestationVerifier(policy(platform, td), collateral_source=source)
    evidence = shipped(platform, td, now=NOW, tcb_evaluation_data_number=18)
    report = verifier(evidence, SIM).report
    assert report.ok
    assert report.collateral_origin == "evidence"
    assert report.verification.tcb_evaluation_data_number == 18
    assert source.asked == 1  # the client's own source is consulted every time


def test_same_age_collateral_from_the_bridge_leaves_the_clients_own_in_use(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(policy(platform, td), collateral_source=own(platform))
    report = verifier(shipped(platform, td, now=NOW), SIM).report
    assert report.ok
    assert report.collateral_origin == "source"


def test_unreadable_collateral_from_the_bridge_is_ignored_when_the_client_has_its_own(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(policy(platform, td), collateral_source=own(platform))
    evidence = Evidence("tdx", td.quote(REPORT_DATA), (), b"{not collateral")
    assert verifier(evidence, SIM).report.collateral_origin == "source"


def test_a_failing_own_source_is_not_replaced_by_the_bridges_collateral(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    verifier = AttestationVerifier(policy(platform, td), collateral_source=OwnSource(None))
    error = refusal(verifier, shipped(platform, td, now=NOW))
    assert error.check == "collateral"
    assert "own collateral source failed" in str(error)
    assert "not used in its place" in str(error)
