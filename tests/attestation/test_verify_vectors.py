"""Every real TDX vector verifies (or is rejected) exactly as its expected.json says.

Also: the report's decoded fields equal the vector's, our verdicts agree with dcap-qvl (the
test-only oracle) on every vector, the warm path gives the same report, and Intel's root is
the only one trusted by default.
"""

from __future__ import annotations

import json
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509

from attestation.collateral import Collateral
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.simulated import SimulatedTdx
from attestation.trust import INTEL_SGX_ROOT_CA_SHA256, intel_sgx_root_ca
from attestation.verify import (
    CHECK_NAMES,
    COLLATERAL_CHECK_NAMES,
    VerifiedCollateral,
    verify_collateral,
    verify_quote,
)
from tests.vectors import TDX_CASES, TdxCase, intel_root_pem, tdx_case


def _verify(case: TdxCase) -> VerificationReport:
    return verify_quote(case.quote, Collateral.from_json(case.collateral_json), now=case.now)


def _oracle(case: TdxCase) -> dict[str, Any]:
    """dcap-qvl's verdict: {"ok": bool, "status": str | None, "advisories": [...]}."""
    c = case.collateral_json
    collateral = dcap_qvl.QuoteCollateralV3(
        c["pck_crl_issuer_chain"],
        bytes.fromhex(c["root_ca_crl"]),
        bytes.fromhex(c["pck_crl"]),
        c["tcb_info_issuer_chain"],
        c["tcb_info"],
        bytes.fromhex(c["tcb_info_signature"]),
        c["qe_identity_issuer_chain"],
        c["qe_identity"],
        bytes.fromhex(c["qe_identity_signature"]),
    )
    try:
        result = dcap_qvl.verify(case.quote, collateral, case.now)
    except ValueError as exc:
        return {"ok": False, "status": None, "advisories": [], "error": str(exc)}
    return {"ok": True, "status": result.status, "advisories": list(result.advisory_ids)}


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_verdict_matches_expected(name: str) -> None:
    case = tdx_case(name)
    report = _verify(case)
    reference = case.expected["reference_result"]
    assert [c.name for c in report.checks] == list(CHECK_NAMES)
    assert report.ok is reference["ok"], report.failed
    if reference["ok"]:
        assert report.tcb_status == TcbStatus(reference["tcb_status"])
        assert list(report.advisory_ids) == reference["advisory_ids"]
    else:
        # The negative vectors are authentic quotes of misconfigured TDs: exactly the TD
        # attributes check fails, everything cryptographic passes.
        assert [c.name for c in report.failed] == ["td_attributes"]
        assert all(c.status is not CheckStatus.SKIP for c in report.checks)


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_decoded_fields_match_expected(name: str) -> None:
    case = tdx_case(name)
    report = _verify(case)
    exp = case.expected
    assert report.quote is not None
    td = report.quote.td_report
    assert report.quote.version == exp["quote_version"]
    assert report.fmspc is not None
    assert report.fmspc.hex() == exp["fmspc"].lower()
    fields = {
        "tee_tcb_svn": td.tee_tcb_svn,
        "mr_seam": td.mr_seam,
        "mr_signer_seam": td.mr_signer_seam,
        "seam_attributes": td.seam_attributes,
        "td_attributes": td.td_attributes,
        "xfam": td.xfam,
        "mr_td": td.mr_td,
        "mr_config_id": td.mr_config_id,
        "mr_owner": td.mr_owner,
        "mr_owner_config": td.mr_owner_config,
        "rt_mr0": td.rtmr0,
        "rt_mr1": td.rtmr1,
        "rt_mr2": td.rtmr2,
        "rt_mr3": td.rtmr3,
        "report_data": td.report_data,
    }
    for key, value in fields.items():
        assert value.hex() == exp[key], key
    if "tee_tcb_svn2" in exp:
        assert td.tee_tcb_svn_2 is not None
        assert td.tee_tcb_svn_2.hex() == exp["tee_tcb_svn2"]
        assert td.mr_service_td is not None
        assert td.mr_service_td.hex() == exp["mr_service_td"]
    else:
        assert td.tee_tcb_svn_2 is None


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_report_metadata(name: str) -> None:
    case = tdx_case(name)
    report = _verify(case)
    collateral = Collateral.from_json(case.collateral_json)
    assert report.verified_at == case.now
    # The age a policy bounds counts the PCK CRL too: in three of these vectors Intel's PCK CRL
    # was issued minutes before the TCB Info, so it is the oldest part.
    pck_crl = x509.load_der_x509_crl(collateral.pck_crl)
    oldest = min(collateral.issue_date, int(pck_crl.last_update_utc.timestamp()))
    assert report.collateral_issue_date == oldest
    assert report.tcb_evaluation_data_number == min(
        collateral.tcb_info.tcb_evaluation_data_number,
        collateral.qe_identity.tcb_evaluation_data_number,
    )
    assert report.trusted_root_sha256 == INTEL_SGX_ROOT_CA_SHA256


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_agrees_with_dcap_qvl(name: str) -> None:
    case = tdx_case(name)
    report = _verify(case)
    oracle = _oracle(case)
    assert report.ok is oracle["ok"], oracle
    if oracle["ok"]:
        assert report.tcb_status == TcbStatus(oracle["status"])
        assert list(report.advisory_ids) == oracle["advisories"]


def test_outofdate_vector_reports_status_and_advisories_but_passes() -> None:
    report = _verify(tdx_case("neg-outofdate"))
    assert report.ok
    assert report.check("platform_tcb").status is CheckStatus.PASS
    assert report.platform_tcb_status is TcbStatus.OUT_OF_DATE
    assert report.tdx_module_tcb_status is TcbStatus.UP_TO_DATE
    assert report.qe_tcb_status is TcbStatus.UP_TO_DATE
    assert report.advisory_ids == ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")


def test_debug_vector_fails_td_attributes_naming_debug() -> None:
    check = _verify(tdx_case("neg-debug-td")).check("td_attributes")
    assert check.status is CheckStatus.FAIL
    assert "DEBUG" in check.detail


def test_no_sept_ve_disable_vector_fails_td_attributes_naming_it() -> None:
    check = _verify(tdx_case("neg-no-sept-ve-disable")).check("td_attributes")
    assert check.status is CheckStatus.FAIL
    assert "SEPT_VE_DISABLE" in check.detail


def test_v5_vector_checks_mr_service_td() -> None:
    check = _verify(tdx_case("v5-uptodate")).check("mr_service_td")
    assert check.status is CheckStatus.PASS
    assert check.detail == "MRSERVICETD is zero"


@pytest.mark.parametrize("name", TDX_CASES)
def test_warm_path_gives_the_same_report(name: str) -> None:
    case = tdx_case(name)
    cold = _verify(case)
    verified = VerifiedCollateral.prepare(Collateral.from_json(case.collateral_json))
    first = verify_quote(case.quote, verified, now=case.now)
    second = verify_quote(case.quote, verified, now=case.now)  # PCK chain now cached
    for warm in (first, second):
        assert warm.checks == cold.checks
        assert warm.tcb_status == cold.tcb_status
        assert warm.advisory_ids == cold.advisory_ids


def test_warm_path_still_checks_time(v4_case: TdxCase, v4_collateral: Collateral) -> None:
    verified = VerifiedCollateral.prepare(v4_collateral)
    assert verify_quote(v4_case.quote, verified, now=v4_case.now).ok
    late = verify_quote(v4_case.quote, verified, now=v4_collateral.next_update + 1)
    assert not late.ok
    assert late.check("tcb_info_validity").status is CheckStatus.FAIL


def test_warm_collateral_refuses_other_roots(
    v4_case: TdxCase, v4_collateral: Collateral, sim: SimulatedTdx
) -> None:
    verified = VerifiedCollateral.prepare(v4_collateral)
    with pytest.raises(ValueError, match="other trusted roots"):
        verify_quote(v4_case.quote, verified, now=v4_case.now, trusted_roots=[sim.root_certificate])


def test_intel_root_is_the_pinned_default() -> None:
    from cryptography import x509

    assert intel_sgx_root_ca() == x509.load_pem_x509_certificate(intel_root_pem())


def test_real_quote_is_refused_when_only_another_root_is_trusted(
    v4_case: TdxCase, v4_collateral: Collateral, sim: SimulatedTdx
) -> None:
    report = verify_quote(
        v4_case.quote, v4_collateral, now=v4_case.now, trusted_roots=[sim.root_certificate]
    )
    assert not report.ok
    assert report.check("root_ca").status is CheckStatus.FAIL
    assert report.trusted_root_sha256 is None
    assert report.check("pck_chain").status is CheckStatus.SKIP


def test_simulated_quote_is_refused_by_default(sim: SimulatedTdx) -> None:
    from tests.attestation.conftest import SIM_NOW

    collateral = Collateral.from_json(sim.collateral())
    report = verify_quote(sim.quote(bytes(64)), collateral, now=SIM_NOW)
    assert not report.ok
    assert report.check("root_ca").status is CheckStatus.FAIL


def test_simulated_quote_verifies_with_its_root_passed(sim: SimulatedTdx) -> None:
    from tests.attestation.conftest import SIM_NOW

    collateral = Collateral.from_json(sim.collateral())
    report = verify_quote(
        sim.quote(bytes(64)), collateral, now=SIM_NOW, trusted_roots=[sim.root_certificate]
    )
    assert report.ok, report.failed
    assert report.tcb_status is TcbStatus.UP_TO_DATE


def test_collateral_json_shape_is_what_dcap_qvl_reads(v4_case: TdxCase) -> None:
    round_tripped = Collateral.from_json(v4_case.collateral_json).to_json()
    parsed = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(round_tripped))
    assert parsed.tcb_info == v4_case.collateral_json["tcb_info"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"now": 1.5}, TypeError),
        ({"now": True}, TypeError),
        ({"now": 0, "trusted_roots": []}, ValueError),
        ({"now": 0, "trusted_roots": "pem"}, TypeError),
    ],
)
def test_programming_errors_raise(
    v4_case: TdxCase, v4_collateral: Collateral, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        verify_quote(v4_case.quote, v4_collateral, **kwargs)


def test_wrong_quote_type_raises(v4_collateral: Collateral) -> None:
    with pytest.raises(TypeError):
        verify_quote("not bytes", v4_collateral, now=0)  # type: ignore[arg-type]


# --- Differential: simulated platforms in states the real vectors do not cover -------------------


def _set_qe_level(collateral: dict[str, str], status: str, advisory: str) -> dict[str, Any]:
    identity: dict[str, Any] = json.loads(collateral["qe_identity"])
    identity["tcbLevels"][0].update(tcbStatus=status, advisoryIDs=[advisory])
    return identity


def _set_module_level(collateral: dict[str, str], status: str, advisory: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(collateral["tcb_info"])
    info["tdxModuleIdentities"][0]["tcbLevels"][0].update(tcbStatus=status, advisoryIDs=[advisory])
    return info


def _scenario(sim: SimulatedTdx, name: str) -> dict[str, str]:
    from tests.attestation.conftest import resign

    base = sim.collateral()
    if name == "qe_out_of_date":
        return resign(sim, base, qe_identity=_set_qe_level(base, "OutOfDate", "INTEL-SA-00615"))
    if name == "module_out_of_date":
        return resign(sim, base, tcb_info=_set_module_level(base, "OutOfDate", "INTEL-SA-01036"))
    if name == "configuration_needed_and_qe_out_of_date":
        conf = sim.collateral(tcb_status="ConfigurationNeeded", advisory_ids=("INTEL-SA-1",))
        return resign(sim, conf, qe_identity=_set_qe_level(conf, "OutOfDate", "INTEL-SA-2"))
    if name == "sw_hardening_needed":
        return sim.collateral(tcb_status="SWHardeningNeeded", advisory_ids=("INTEL-SA-3",))
    if name == "revoked":
        return sim.collateral(tcb_status="Revoked")
    if name == "pck_revoked":
        return sim.collateral(revoke_pck=True)
    assert name == "up_to_date"
    return base


@pytest.mark.parametrize(
    "scenario",
    [
        "up_to_date",
        "qe_out_of_date",
        "module_out_of_date",
        "configuration_needed_and_qe_out_of_date",
        "sw_hardening_needed",
        "revoked",
        "pck_revoked",
    ],
)
def test_simulated_states_agree_with_dcap_qvl(sim: SimulatedTdx, scenario: str) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.attestation.conftest import SIM_NOW

    collateral = _scenario(sim, scenario)
    quote = sim.quote(bytes(64))
    report = verify_quote(
        quote, Collateral.from_json(collateral), now=SIM_NOW, trusted_roots=[sim.root_certificate]
    )
    root_der = sim.root_certificate.public_bytes(Encoding.DER)
    try:
        oracle = dcap_qvl.verify_with_root_ca(
            quote, dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral)), root_der, SIM_NOW
        )
    except ValueError:
        # dcap-qvl refuses Revoked TCB levels and revoked PCKs outright; we fail a check.
        assert not report.ok
        return
    assert report.ok, report.failed
    assert report.tcb_status == TcbStatus(oracle.status)
    assert list(report.advisory_ids) == list(oracle.advisory_ids)


def test_altered_shipped_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import attestation.trust as trust

    trust.intel_sgx_root_ca.cache_clear()
    monkeypatch.setattr(trust, "INTEL_SGX_ROOT_CA_SHA256", bytes(32))
    try:
        with pytest.raises(RuntimeError, match="pinned fingerprint"):
            trust.intel_sgx_root_ca()
    finally:
        trust.intel_sgx_root_ca.cache_clear()


def test_trusted_roots_must_be_certificates(v4_case: TdxCase, v4_collateral: Collateral) -> None:
    with pytest.raises(TypeError, match="not a Certificate"):
        verify_quote(v4_case.quote, v4_collateral, now=0, trusted_roots=[b"pem"])  # type: ignore[list-item]


@pytest.mark.parametrize("name", TDX_CASES)
@pytest.mark.parametrize("offset", [0, 10**8], ids=["at-now", "long-after-next-update"])
def test_verify_collateral_is_verify_quotes_collateral_checks(name: str, offset: int) -> None:
    """The collateral-only verification (used by the cache) is the same code as the full one."""
    case = tdx_case(name)
    collateral = Collateral.from_json(case.collateral_json)
    full = verify_quote(case.quote, collateral, now=case.now + offset)
    alone = verify_collateral(collateral, now=case.now + offset)
    assert [c.name for c in alone.checks] == list(COLLATERAL_CHECK_NAMES)
    assert alone.checks == [full.check(n) for n in COLLATERAL_CHECK_NAMES]
    assert alone.ok is (offset == 0)
