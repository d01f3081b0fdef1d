"""The aggregate image hash and the image digests read from a verified RTMR3 log."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from attestation.errors import EventLogError
from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    EventLog,
    RuntimeEventLog,
    extend,
    parse_ccel,
    parse_event_log,
    replay,
    replay_against,
)
from attestation.image_hash import aggregate_image_hash, compute_image_hashes, image_digests
from attestation.quote import TdReport
from tests.vectors import TdxCase, ccel_sample, tdx_case

IMAGE = "sha256:" + "ab" * 32
CONFIG = hashlib.sha384(b"config").digest()


def td_report_of(case: TdxCase, **overrides: bytes) -> TdReport:
    """The TD report of a real vector, from its independently decoded expected.json fields."""
    e = case.expected
    fields = {
        "tee_tcb_svn": e["tee_tcb_svn"], "mr_seam": e["mr_seam"],
        "mr_signer_seam": e["mr_signer_seam"], "seam_attributes": e["seam_attributes"],
        "td_attributes": e["td_attributes"], "xfam": e["xfam"], "mr_td": e["mr_td"],
        "mr_config_id": e["mr_config_id"], "mr_owner": e["mr_owner"],
        "mr_owner_config": e["mr_owner_config"], "rtmr0": e["rt_mr0"], "rtmr1": e["rt_mr1"],
        "rtmr2": e["rt_mr2"], "rtmr3": e["rt_mr3"], "report_data": e["report_data"],
    }  # fmt: skip
    report = TdReport(**{k: bytes.fromhex(v) for k, v in fields.items()})
    return dataclasses.replace(report, **overrides)


def _bridge_log(*events: tuple[str, bytes]) -> tuple[EventLog, bytes]:
    log = RuntimeEventLog()
    rtmr3 = bytes(48)
    for name, payload in events:
        rtmr3 = extend(rtmr3, log.append(name, payload))
    return parse_event_log(log.to_bytes()), rtmr3


def test_aggregate_image_hash_is_the_documented_construction() -> None:
    report = td_report_of(tdx_case("v4-dstack-eventlog"))
    expected = hashlib.sha384(
        b"shroud/image-hash/v1\x00" + report.mr_td + report.rtmr0 + report.rtmr1 + report.rtmr2
    ).digest()
    assert aggregate_image_hash(report) == expected


@pytest.mark.parametrize("register", ["mr_td", "rtmr0", "rtmr1", "rtmr2"])
def test_aggregate_image_hash_changes_with_each_image_register(register: str) -> None:
    report = td_report_of(tdx_case("v4-uptodate"))
    other = dataclasses.replace(report, **{register: b"\x5a" * 48})
    assert aggregate_image_hash(other) != aggregate_image_hash(report)


def test_aggregate_image_hash_ignores_runtime_and_owner_registers() -> None:
    report = td_report_of(tdx_case("v4-uptodate"))
    other = dataclasses.replace(
        report, rtmr3=b"\x01" * 48, mr_config_id=b"\x02" * 48, report_data=b"\x03" * 64
    )
    assert aggregate_image_hash(other) == aggregate_image_hash(report)


def test_aggregate_image_hash_register_order_matters() -> None:
    report = td_report_of(tdx_case("v4-dstack-eventlog"))
    swapped = dataclasses.replace(report, rtmr1=report.rtmr2, rtmr2=report.rtmr1)
    assert aggregate_image_hash(swapped) != aggregate_image_hash(report)


def test_malformed_register_length_is_rejected() -> None:
    report = dataclasses.replace(td_report_of(tdx_case("v4-uptodate")), mr_td=b"\x00" * 47)
    with pytest.raises(ValueError, match="mr_td"):
        aggregate_image_hash(report)


def test_dstack_compose_hash_is_read_from_the_replayed_log() -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    log = parse_event_log(case.event_log_path.read_bytes())
    hashes = compute_image_hashes(td_report_of(case), [log])
    assert hashes.replay is not None
    assert hashes.replay.ok
    assert hashes.digests is not None
    compose = next(
        r for r in json.loads(case.event_log_path.read_bytes()) if r["event"] == "compose-hash"
    )
    assert hashes.digests.compose_hash == bytes.fromhex(compose["event_payload"])
    assert hashes.digests.image_digest is None
    assert hashes.digests.config_hash is None


def test_bridge_image_and_config_digests_are_read_from_the_runtime_log() -> None:
    log, rtmr3 = _bridge_log((IMAGE_DIGEST_EVENT, IMAGE.encode()), (CONFIG_HASH_EVENT, CONFIG))
    report = td_report_of(tdx_case("v4-uptodate"), rtmr3=rtmr3)
    hashes = compute_image_hashes(report, [log])
    assert hashes.digests is not None
    assert hashes.digests.image_digest == IMAGE
    assert hashes.digests.config_hash == CONFIG
    assert [e.name for e in hashes.digests.events] == [IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT]


def test_digests_from_a_log_the_quote_does_not_vouch_for_are_refused() -> None:
    log, _ = _bridge_log((IMAGE_DIGEST_EVENT, IMAGE.encode()))
    report = td_report_of(tdx_case("v4-uptodate"))  # its RTMR3 is zero: the log is not its own
    hashes = compute_image_hashes(report, [log])
    assert hashes.digests is None
    assert hashes.replay is not None
    assert not hashes.replay.register(3).matches
    with pytest.raises(EventLogError, match="replays"):
        image_digests(hashes.replay)


def test_digests_without_an_rtmr3_log_are_refused() -> None:
    ccel = parse_ccel(ccel_sample())
    rtmrs = replay(ccel.events)
    result = replay_against([ccel], rtmrs)
    with pytest.raises(EventLogError, match="RTMR3"):
        image_digests(result)


def test_duplicate_image_digest_event_is_rejected() -> None:
    log, rtmr3 = _bridge_log(
        (IMAGE_DIGEST_EVENT, IMAGE.encode()), (IMAGE_DIGEST_EVENT, ("sha256:" + "cd" * 32).encode())
    )
    report = td_report_of(tdx_case("v4-uptodate"), rtmr3=rtmr3)
    with pytest.raises(EventLogError, match="more than one"):
        compute_image_hashes(report, [log])


@pytest.mark.parametrize(
    ("name", "payload", "message"),
    [
        (IMAGE_DIGEST_EVENT, b"sha256:ABCD", "ALGO:HEX"),
        (IMAGE_DIGEST_EVENT, b"md5:" + b"0" * 32, "ALGO:HEX"),
        (CONFIG_HASH_EVENT, b"\x00" * 32, "expected 48"),
    ],
)
def test_malformed_digest_event_is_rejected(name: str, payload: bytes, message: str) -> None:
    log, rtmr3 = _bridge_log((name, payload))
    report = td_report_of(tdx_case("v4-uptodate"), rtmr3=rtmr3)
    with pytest.raises(EventLogError, match=message):
        compute_image_hashes(report, [log])


def test_without_logs_only_the_aggregate_is_computed() -> None:
    hashes = compute_image_hashes(td_report_of(tdx_case("v5-uptodate")))
    assert hashes.replay is None
    assert hashes.digests is None
    assert len(hashes.aggregate) == 48
