"""The collateral model: loading the QuoteCollateralV3 shape of the real vectors, strictly."""

from __future__ import annotations

import json
from typing import Any

import pytest

from attestation.collateral import COLLATERAL_JSON_KEYS, Collateral, QeIdentity, TcbInfo, _Reader
from attestation.errors import CollateralError
from attestation.report import TcbStatus
from tests.vectors import TDX_CASES, tdx_case


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_collateral_round_trips_exactly(name: str) -> None:
    case = tdx_case(name)
    collateral = Collateral.from_json(case.collateral_json)
    assert collateral.to_json() == case.collateral_json
    # The signed bodies are kept byte for byte, not re-serialised.
    assert collateral.tcb_info.raw == case.collateral_json["tcb_info"]
    assert collateral.qe_identity.raw == case.collateral_json["qe_identity"]


@pytest.mark.parametrize("name", TDX_CASES)
def test_vector_collateral_exposes_fmspc_and_dates(name: str) -> None:
    case = tdx_case(name)
    collateral = Collateral.from_json(case.collateral_json)
    assert collateral.fmspc.hex().upper() == case.expected["fmspc"].upper()
    assert collateral.tcb_info.issue_date < collateral.tcb_info.next_update
    assert collateral.qe_identity.issue_date < collateral.qe_identity.next_update
    assert collateral.issue_date <= case.now <= collateral.next_update


def test_v4_uptodate_tcb_info_fields() -> None:
    collateral = Collateral.from_json(tdx_case("v4-uptodate").collateral_json)
    info = collateral.tcb_info
    assert info.id == "TDX"
    assert info.version == 3
    # 2025-06-19T10:16:03Z / 2025-07-19T10:16:03Z
    assert info.issue_date == 1750328163
    assert info.next_update == 1752920163
    assert info.pce_id == b"\x00\x00"
    assert info.tdx_module is not None
    assert info.tdx_module.mrsigner == bytes(48)
    assert [m.id for m in info.tdx_module_identities] == ["TDX_03", "TDX_01"]
    assert info.tdx_module_identities[1].tcb_levels[1].status is TcbStatus.OUT_OF_DATE
    top = info.tcb_levels[0]
    assert top.sgx_components[:8] == (2, 2, 2, 2, 3, 1, 0, 5)
    assert top.pce_svn == 11
    assert top.tdx_components[:3] == (5, 0, 2)
    assert top.status is TcbStatus.UP_TO_DATE


def test_outofdate_levels_carry_advisories() -> None:
    info = Collateral.from_json(tdx_case("neg-outofdate").collateral_json).tcb_info
    assert info.tcb_levels[1].advisory_ids == ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")


def test_qe_identity_fields() -> None:
    qe = Collateral.from_json(tdx_case("v4-uptodate").collateral_json).qe_identity
    assert qe.id == "TD_QE"
    assert qe.isv_prod_id == 2
    assert qe.miscselect_mask == 0xFFFFFFFF
    assert qe.attributes_mask.hex().upper() == "FBFFFFFFFFFFFFFF0000000000000000"
    assert qe.mrsigner.hex().upper().startswith("DC9E2A7C")
    assert qe.tcb_levels[0].isv_svn == 4


def _mutated(**changes: Any) -> dict[str, Any]:
    obj = dict(tdx_case("v4-uptodate").collateral_json)
    obj.update(changes)
    return obj


def _tcb_info_with(**changes: Any) -> str:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    body.update(changes)
    return json.dumps(body)


def test_missing_key_is_rejected() -> None:
    obj = _mutated()
    del obj["pck_crl"]
    with pytest.raises(CollateralError, match="missing keys: pck_crl"):
        Collateral.from_json(obj)


def test_unknown_key_is_rejected() -> None:
    with pytest.raises(CollateralError, match="unknown keys: surprise"):
        Collateral.from_json(_mutated(surprise="x"))


def test_non_hex_crl_is_rejected() -> None:
    with pytest.raises(CollateralError, match=r"collateral\.root_ca_crl is not hex"):
        Collateral.from_json(_mutated(root_ca_crl="zz"))


def test_short_signature_is_rejected() -> None:
    with pytest.raises(CollateralError, match="tcb_info_signature is 63 bytes"):
        Collateral.from_json(_mutated(tcb_info_signature="00" * 63))


def test_duplicate_key_in_signed_body_is_rejected() -> None:
    raw = tdx_case("v4-uptodate").collateral_json["tcb_info"]
    doubled = raw[:-1] + ',"fmspc":"000000000000"}'
    with pytest.raises(CollateralError, match="duplicate JSON key 'fmspc'"):
        TcbInfo.parse(doubled)


def test_tcb_info_v2_is_rejected() -> None:
    with pytest.raises(CollateralError, match="only TCB Info v3"):
        TcbInfo.parse(_tcb_info_with(version=2))


def test_unknown_tcb_status_is_rejected() -> None:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    body["tcbLevels"][0]["tcbStatus"] = "Fine"
    with pytest.raises(CollateralError, match=r"tcbLevels\[0\]\.tcbStatus is an unknown"):
        TcbInfo.parse(json.dumps(body))


def test_short_component_list_is_rejected() -> None:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    body["tcbLevels"][0]["tcb"]["sgxtcbcomponents"].pop()
    with pytest.raises(CollateralError, match="sgxtcbcomponents has 15 entries"):
        TcbInfo.parse(json.dumps(body))


def test_boolean_svn_is_rejected() -> None:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    body["tcbLevels"][0]["tcb"]["pcesvn"] = True
    with pytest.raises(CollateralError, match="pcesvn must be a non-negative integer"):
        TcbInfo.parse(json.dumps(body))


def test_date_without_zone_is_rejected() -> None:
    with pytest.raises(CollateralError, match="nextUpdate has no time zone"):
        TcbInfo.parse(_tcb_info_with(nextUpdate="2025-07-19T10:16:03"))


def test_wrong_length_fmspc_is_rejected() -> None:
    with pytest.raises(CollateralError, match="fmspc is 5 bytes"):
        TcbInfo.parse(_tcb_info_with(fmspc="0011223344"))


def test_qe_identity_not_json_is_rejected() -> None:
    with pytest.raises(CollateralError, match="qe_identity is not valid JSON"):
        QeIdentity.parse("{not json")


def test_collateral_not_an_object_is_rejected() -> None:
    with pytest.raises(CollateralError, match="must be a JSON object"):
        Collateral.from_json_text("[1, 2]")


def test_keys_constant_matches_vector_shape() -> None:
    assert set(COLLATERAL_JSON_KEYS) == set(tdx_case("v4-uptodate").collateral_json)


def _qe_identity_with(**changes: Any) -> str:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["qe_identity"])
    body.update(changes)
    return json.dumps(body)


def test_miscselect_is_read_little_endian_like_the_report() -> None:
    # The report's MISCSELECT is a little-endian u32; reading the identity's hex big-endian
    # would compare the QE's bits against the wrong ones (and mask the wrong ones out).
    qe = QeIdentity.parse(_qe_identity_with(miscselect="01000000", miscselectMask="FF000000"))
    assert qe.miscselect == 0x00000001
    assert qe.miscselect_mask == 0x000000FF


@pytest.mark.parametrize("version", [1, 3])
def test_qe_identity_of_another_version_is_rejected(version: int) -> None:
    # Other versions lay out (or mean) the fields differently; reading one as v2 is a guess.
    with pytest.raises(CollateralError, match=f"qe_identity.version is {version}"):
        QeIdentity.parse(_qe_identity_with(version=version))


@pytest.mark.parametrize("name", TDX_CASES)
def test_svn_fast_path_reads_what_the_checked_path_reads(name: str) -> None:
    body = json.loads(tdx_case(name).collateral_json["tcb_info"])
    for i, level in enumerate(body["tcbLevels"]):
        reader = _Reader(level["tcb"], f"tcb_info.tcbLevels[{i}].tcb")
        for key in ("sgxtcbcomponents", "tdxtcbcomponents"):
            assert reader.svn_components(key) == reader._svn_components_checked(key)


@pytest.mark.parametrize(
    ("entry", "error"),
    [
        ({"svn": True}, r"\[3\]\.svn must be a non-negative integer"),
        ({"svn": -1}, r"\[3\]\.svn must be a non-negative integer"),
        ({"svn": 1.0}, r"\[3\]\.svn must be a non-negative integer"),
        ({"svn": "2"}, r"\[3\]\.svn must be a non-negative integer"),
        ({"svn": None}, r"\[3\]\.svn must be a non-negative integer"),
        ({"svn": 256}, "has an SVN above 255"),
        ({"category": "BIOS"}, r"\[3\]\.svn is missing"),
        ([2], r"\[3\] must be an object"),
        (2, r"\[3\] must be an object"),
    ],
)
def test_malformed_svn_components_are_refused_with_the_checked_paths_error(
    entry: object, error: str
) -> None:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    body["tcbLevels"][0]["tcb"]["tdxtcbcomponents"][3] = entry
    tcb = body["tcbLevels"][0]["tcb"]
    reader = _Reader(tcb, "tcb_info.tcbLevels[0].tcb")
    for read in (reader.svn_components, reader._svn_components_checked):
        with pytest.raises(CollateralError, match=error):
            read("tdxtcbcomponents")
    with pytest.raises(CollateralError, match=error):
        TcbInfo.parse(json.dumps(body))


def test_component_lists_of_the_wrong_size_or_type_are_refused() -> None:
    body = json.loads(tdx_case("v4-uptodate").collateral_json["tcb_info"])
    tcb = body["tcbLevels"][0]["tcb"]
    tcb["sgxtcbcomponents"].append({"svn": 0})
    tcb["tdxtcbcomponents"] = {"svn": 0}
    reader = _Reader(tcb, "tcb")
    with pytest.raises(CollateralError, match="sgxtcbcomponents has 17 entries"):
        reader.svn_components("sgxtcbcomponents")
    with pytest.raises(CollateralError, match="tdxtcbcomponents must be a list"):
        reader.svn_components("tdxtcbcomponents")
