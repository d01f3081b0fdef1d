"""TCB level matching and status convergence (Intel QVL rules), on real TCB Info levels."""

from __future__ import annotations

import pytest

from attestation.collateral import Collateral, TcbInfo
from attestation.report import TcbStatus
from attestation.tcb import (
    converge,
    find_module_identity,
    match_isv_level,
    match_platform_levels,
    module_identity_id,
    tdx_level_matches,
    unite_advisories,
)
from tests.vectors import tdx_case

S = TcbStatus


def _outofdate_info() -> TcbInfo:
    return Collateral.from_json(tdx_case("neg-outofdate").collateral_json).tcb_info


def _svn(*head: int) -> bytes:
    return bytes(head) + bytes(16 - len(head))


# neg-outofdate levels (newest first):
#   0: sgx [7,7,2,2,3,1,0,3] pce 11 tdx [5,0,7] UpToDate
#   1: sgx [6,6,2,2,3,1,0,3] pce 11 tdx [3,0,6] OutOfDate (00960, 00982, 00986)
#   2: sgx [5,5,2,2,3,1,0,3] pce 11 tdx [3,0,5] OutOfDate (+00837)
#   3: sgx [5,5,...]         pce 5  tdx [3,0,5] OutOfDate (many)
CPU_TOP = (7, 7, 2, 2, 3, 1, 0, 3) + (0,) * 8
CPU_OLD = (6, 6, 2, 2, 3, 1, 0, 3) + (0,) * 8


def test_platform_at_newest_level_is_up_to_date() -> None:
    sgx, tdx = match_platform_levels(
        _outofdate_info().tcb_levels, cpu_svn=CPU_TOP, pce_svn=11, tee_tcb_svn=_svn(5, 0, 7)
    )
    assert sgx is not None
    assert tdx is not None
    assert tdx.status is S.UP_TO_DATE


def test_lower_sgx_component_selects_older_level_with_its_advisories() -> None:
    _, tdx = match_platform_levels(
        _outofdate_info().tcb_levels, cpu_svn=CPU_OLD, pce_svn=11, tee_tcb_svn=_svn(4, 1, 7)
    )
    assert tdx is not None
    assert tdx.status is S.OUT_OF_DATE
    assert tdx.advisory_ids == ("INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986")


def test_lower_pcesvn_falls_to_the_level_that_allows_it() -> None:
    _, tdx = match_platform_levels(
        _outofdate_info().tcb_levels,
        cpu_svn=(5, 5, 2, 2, 3, 1, 0, 3) + (0,) * 8,
        pce_svn=10,
        tee_tcb_svn=_svn(5, 0, 7),
    )
    assert tdx == _outofdate_info().tcb_levels[3]


def test_platform_below_every_level_matches_none() -> None:
    sgx, tdx = match_platform_levels(
        _outofdate_info().tcb_levels, cpu_svn=(1,) * 16, pce_svn=11, tee_tcb_svn=_svn(5, 0, 7)
    )
    assert sgx is None
    assert tdx is None


def test_tdx_components_below_every_level_match_sgx_only() -> None:
    sgx, tdx = match_platform_levels(
        _outofdate_info().tcb_levels, cpu_svn=CPU_TOP, pce_svn=11, tee_tcb_svn=_svn(5, 0, 1)
    )
    assert sgx is not None
    assert sgx.status is S.UP_TO_DATE
    assert tdx is None


def test_module_bytes_are_compared_for_tdx10_style_svn() -> None:
    level = _outofdate_info().tcb_levels[0]  # tdx [5, 0, 7]
    assert not tdx_level_matches(level, _svn(4, 0, 7))
    assert tdx_level_matches(level, _svn(5, 0, 7))


def test_module_bytes_are_skipped_when_module_version_is_set() -> None:
    level = _outofdate_info().tcb_levels[0]
    # SVN 4 < 5, but with a module version the module identity judges byte 0, not this level.
    assert tdx_level_matches(level, _svn(4, 1, 7))
    assert not tdx_level_matches(level, _svn(9, 1, 6))


def test_module_identity_id_is_upper_hex() -> None:
    assert module_identity_id(1) == "TDX_01"
    assert module_identity_id(0x1A) == "TDX_1A"


def test_module_identity_lookup_and_level() -> None:
    info = _outofdate_info()
    identity = find_module_identity(info, 1)
    assert identity is not None
    assert identity.id == "TDX_01"
    assert find_module_identity(info, 2) is None
    level = match_isv_level(identity.tcb_levels, 3)  # levels: isvsvn 4 UpToDate, 2 OutOfDate
    assert level is not None
    assert level.status is S.OUT_OF_DATE
    assert match_isv_level(identity.tcb_levels, 1) is None


@pytest.mark.parametrize(
    ("platform", "other", "expected"),
    [
        (S.UP_TO_DATE, S.UP_TO_DATE, S.UP_TO_DATE),
        (S.SW_HARDENING_NEEDED, S.UP_TO_DATE, S.SW_HARDENING_NEEDED),
        (S.UP_TO_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.SW_HARDENING_NEEDED, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.CONFIGURATION_NEEDED, S.OUT_OF_DATE, S.OUT_OF_DATE_CONFIGURATION_NEEDED),
        (
            S.CONFIGURATION_AND_SW_HARDENING_NEEDED,
            S.OUT_OF_DATE,
            S.OUT_OF_DATE_CONFIGURATION_NEEDED,
        ),
        (S.OUT_OF_DATE, S.OUT_OF_DATE, S.OUT_OF_DATE),
        (S.UP_TO_DATE, S.REVOKED, S.REVOKED),
        (S.REVOKED, S.UP_TO_DATE, S.REVOKED),
        # A status Intel never publishes for a QE/module level is read as OutOfDate, not better.
        (S.UP_TO_DATE, S.SW_HARDENING_NEEDED, S.OUT_OF_DATE),
    ],
)
def test_convergence_worst_wins(platform: S, other: S, expected: S) -> None:
    assert converge(platform, other) is expected


def test_convergence_never_improves_the_platform_status() -> None:
    for platform in S:
        for other in S:
            assert converge(platform, other).severity >= platform.severity


def test_advisories_are_united_once_in_order() -> None:
    assert unite_advisories(["A", "B"], [], ["B", "C", "A"]) == ("A", "B", "C")
