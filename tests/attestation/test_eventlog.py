"""Event log parsing (CCEL, Shroud runtime, dstack JSON) and replay against real quotes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.errors import EventLogError
from attestation.eventlog import (
    DSTACK_RUNTIME_EVENT_TYPE,
    EV_NO_ACTION,
    EventLog,
    EventLogFormat,
    RuntimeEventLog,
    dstack_event_digest,
    extend,
    parse_ccel,
    parse_ccel_table,
    parse_dstack_event_log,
    parse_event_log,
    replay,
    replay_against,
    runtime_event_digest,
)
from tests.vectors import ccel_sample, tdx_case

DSTACK = tdx_case("v4-dstack-eventlog")


def _dstack_log_bytes() -> bytes:
    assert DSTACK.event_log_path is not None
    return DSTACK.event_log_path.read_bytes()


def _dstack_records() -> list[dict[str, object]]:
    records: list[dict[str, object]] = json.loads(_dstack_log_bytes())
    return records


def _quote_rtmrs() -> list[bytes]:
    return [bytes.fromhex(DSTACK.expected[f"rt_mr{i}"]) for i in range(4)]


# --- CCEL ------------------------------------------------------------------------------------


def test_ccel_sample_parses_every_event_up_to_the_padding() -> None:
    log = parse_ccel(ccel_sample())
    assert log.format is EventLogFormat.CCEL
    assert len(log.events) == 18
    first = log.events[0]
    assert first.rtmr == 0
    assert first.event_type == 0x8000000B  # EV_EFI_HANDOFF_TABLES2
    assert first.data.startswith(b"\tTdxTable")
    last = log.events[-1]
    assert last.rtmr == 1
    assert last.data == b"Exit Boot Services Returned with Success"
    assert {e.rtmr for e in log.events} == {0, 1}


def test_ccel_separator_and_efi_action_digests_are_sha384_of_their_data() -> None:
    # Cross-checks the digest/data framing against the TCG rule for these two event types.
    log = parse_ccel(ccel_sample())
    checked = 0
    for event in log.events:
        if event.event_type in (0x4, 0x80000007):
            assert event.digest == hashlib.sha384(event.data).digest()
            checked += 1
    assert checked == 5


def test_ccel_replay_matches_an_independent_replay_of_the_raw_bytes() -> None:
    data = ccel_sample()
    rtmr0, rtmr1, rtmr2, rtmr3 = replay(parse_ccel(data).events)
    # Independent walk over the raw records, using offsets read from the file itself.
    offset = 32 + struct.unpack_from("<I", data, 28)[0]
    regs = [bytes(48)] * 4
    while struct.unpack_from("<I", data, offset)[0] != 0xFFFFFFFF:
        mr, _etype, _count, _alg = struct.unpack_from("<IIIH", data, offset)
        digest = data[offset + 14 : offset + 62]
        size = struct.unpack_from("<I", data, offset + 62)[0]
        regs[mr - 1] = hashlib.sha384(regs[mr - 1] + digest).digest()
        offset += 66 + size
    assert [rtmr0, rtmr1, rtmr2, rtmr3] == regs
    assert rtmr2 == rtmr3 == bytes(48)


def test_ccel_padding_of_zeros_is_ignored_too() -> None:
    data = ccel_sample()
    end = data.index(b"\xff" * 16)
    zero_padded = data[:end] + bytes(4096)
    assert parse_ccel(zero_padded).events == parse_ccel(data).events


def test_ccel_no_action_events_are_not_extended() -> None:
    data = bytearray(ccel_sample())
    log = parse_ccel(bytes(data))
    # Turn the first real event into EV_NO_ACTION: it must then drop out of the replay.
    spec_end = 32 + struct.unpack_from("<I", data, 28)[0]
    struct.pack_into("<I", data, spec_end + 4, EV_NO_ACTION)
    altered = parse_ccel(bytes(data))
    assert not altered.events[0].extended
    assert replay(altered.events)[0] != replay(log.events)[0]
    assert (
        replay(altered.events)[0]
        == replay([e for e in log.events if e.index != altered.events[0].index])[0]
    )


def test_ccel_truncated_event_is_rejected_with_its_offset() -> None:
    data = ccel_sample()
    end = data.index(b"\xff" * 16)
    with pytest.raises(EventLogError, match="offset"):
        parse_ccel(data[: end - 10])


def test_ccel_without_spec_id_event_is_rejected() -> None:
    data = bytearray(ccel_sample())
    data[32:48] = b"Spec ID Event02\x00"
    with pytest.raises(EventLogError, match="Spec ID"):
        parse_ccel(bytes(data))


def test_ccel_first_event_not_no_action_is_rejected() -> None:
    data = bytearray(ccel_sample())
    struct.pack_into("<I", data, 4, 0x80000001)
    with pytest.raises(EventLogError, match="EV_NO_ACTION"):
        parse_ccel(bytes(data))


def test_ccel_without_sha384_algorithm_is_rejected() -> None:
    data = bytearray(ccel_sample())
    struct.pack_into("<H", data, 0x3C, 0x000B)  # the Spec ID's only algorithm → SHA-256
    with pytest.raises(EventLogError, match="SHA-384"):
        parse_ccel(bytes(data))


def test_ccel_event_with_undeclared_algorithm_is_rejected() -> None:
    data = bytearray(ccel_sample())
    spec_end = 32 + struct.unpack_from("<I", data, 28)[0]
    struct.pack_into("<H", data, spec_end + 12, 0x0004)  # SHA-1, not in the Spec ID event
    with pytest.raises(EventLogError, match="did not declare"):
        parse_ccel(bytes(data))


def test_ccel_event_for_mrtd_index_is_rejected() -> None:
    data = bytearray(ccel_sample())
    spec_end = 32 + struct.unpack_from("<I", data, 28)[0]
    struct.pack_into("<I", data, spec_end, 0)  # MR index 0 = MRTD: cannot be extended
    with pytest.raises(EventLogError, match="MR index 0"):
        parse_ccel(bytes(data))


def test_ccel_oversized_event_data_length_is_rejected() -> None:
    data = bytearray(ccel_sample())
    spec_end = 32 + struct.unpack_from("<I", data, 28)[0]
    struct.pack_into("<I", data, spec_end + 62, 0xFFFFFFF0)
    with pytest.raises(EventLogError, match="needs"):
        parse_ccel(bytes(data))


def test_acpi_table_passed_as_log_is_rejected_with_a_hint() -> None:
    with pytest.raises(EventLogError, match="data/CCEL"):
        parse_ccel(_ccel_table(len(ccel_sample())))


def _ccel_table(laml: int, *, cc_type: int = 2) -> bytes:
    body = bytearray(56)
    body[0:4] = b"CCEL"
    struct.pack_into("<I", body, 4, 56)
    body[8] = 1
    body[36] = cc_type
    struct.pack_into("<QQ", body, 40, laml, 0x7F000000)
    body[9] = (-sum(body)) % 256
    return bytes(body)


def test_ccel_table_is_parsed_and_bounds_the_log() -> None:
    data = ccel_sample()
    end = data.index(b"\xff" * 16)
    table = parse_ccel_table(_ccel_table(len(data)))
    assert table.log_area_minimum_length == len(data)
    assert table.log_area_start_address == 0x7F000000
    # A table whose log area ends inside the log cuts the log there: the parse then fails.
    with pytest.raises(EventLogError):
        parse_ccel(data, table=_ccel_table(end - 10))
    assert parse_ccel(data, table=_ccel_table(len(data))).events == parse_ccel(data).events


def test_ccel_table_with_bad_checksum_is_rejected() -> None:
    table = bytearray(_ccel_table(65536))
    table[40] ^= 1
    with pytest.raises(EventLogError, match="checksum"):
        parse_ccel_table(bytes(table))


def test_ccel_table_for_another_tee_is_rejected() -> None:
    with pytest.raises(EventLogError, match="CC type"):
        parse_ccel_table(_ccel_table(65536, cc_type=1))


def test_ccel_table_with_wrong_signature_or_length_is_rejected() -> None:
    table = bytearray(_ccel_table(65536))
    with pytest.raises(EventLogError, match="signature"):
        parse_ccel_table(b"TPM2" + bytes(table[4:]))
    with pytest.raises(EventLogError, match="declares"):
        parse_ccel_table(bytes(table) + b"\x00")
    with pytest.raises(EventLogError, match="at least"):
        parse_ccel_table(bytes(table[:40]))


# --- dstack ----------------------------------------------------------------------------------


def test_dstack_log_replays_to_all_four_rtmrs_of_the_quote() -> None:
    log = parse_event_log(_dstack_log_bytes())
    assert log.format is EventLogFormat.DSTACK_JSON
    result = replay_against([log], _quote_rtmrs())
    assert result.ok
    for reg in result.registers:
        assert reg.covered
        assert reg.matches, reg.detail
        assert reg.replayed == _quote_rtmrs()[reg.rtmr]


def test_dstack_runtime_events_are_recomputed_from_name_and_payload() -> None:
    log = parse_dstack_event_log(_dstack_log_bytes())
    runtime = [e for e in log.events if e.event_type == DSTACK_RUNTIME_EVENT_TYPE]
    assert [e.name for e in runtime][:3] == ["system-preparing", "app-id", "compose-hash"]
    for event in runtime:
        assert event.recomputed
        assert event.name is not None
        assert event.digest == dstack_event_digest(event.name, event.data)
        assert not event.digest_mismatch


def test_dstack_forged_compose_hash_payload_is_caught_at_that_event() -> None:
    # An attacker swaps compose-hash's payload but keeps the digest the quote vouches for.
    records = _dstack_records()
    position = next(i for i, r in enumerate(records) if r["event"] == "compose-hash")
    records[position]["event_payload"] = "00" * 32
    log = parse_dstack_event_log(json.dumps(records).encode())
    result = replay_against([log], _quote_rtmrs())
    assert not result.ok
    rtmr3 = result.register(3)
    assert not rtmr3.matches
    assert rtmr3.diverges_at is not None
    assert rtmr3.events[rtmr3.diverges_at].name == "compose-hash"
    assert "compose-hash" in rtmr3.detail
    assert result.verified_events(3) is None
    assert result.register(0).matches


def test_dstack_altered_boot_digest_diverges_in_its_register_only() -> None:
    records = _dstack_records()
    position = next(i for i, r in enumerate(records) if r["imr"] == 2)
    records[position]["digest"] = "11" * 48
    result = replay_against([parse_dstack_event_log(json.dumps(records).encode())], _quote_rtmrs())
    assert [r.matches for r in result.registers] == [True, True, False, True]
    assert "no prefix" in result.register(2).detail


def test_dstack_appended_event_is_reported_after_the_matching_prefix() -> None:
    records = _dstack_records()
    extra = {
        "imr": 3,
        "event_type": DSTACK_RUNTIME_EVENT_TYPE,
        "event": "late",
        "digest": "",
        "event_payload": "",
    }
    extra["digest"] = dstack_event_digest("late", b"").hex()
    records.append(extra)
    result = replay_against([parse_dstack_event_log(json.dumps(records).encode())], _quote_rtmrs())
    rtmr3 = result.register(3)
    assert not rtmr3.matches
    assert rtmr3.diverges_at == len(rtmr3.events) - 1
    assert "reached after" in rtmr3.detail


def test_dstack_dropped_event_is_detected() -> None:
    records = [r for r in _dstack_records() if r["event"] != "instance-id"]
    result = replay_against([parse_dstack_event_log(json.dumps(records).encode())], _quote_rtmrs())
    assert not result.register(3).matches
    assert not result.ok


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda r: r.update(imr=4), "imr"),
        (lambda r: r.update(imr=True), "imr"),
        (lambda r: r.update(event_type=-1), "event_type"),
        (lambda r: r.update(digest="zz"), "hex"),
        (lambda r: r.update(digest="00" * 32), "48"),
        (lambda r: r.update(event_payload=5), "hex"),
        (lambda r: r.update(event=None), "string"),
        (lambda r: r.update(extra=1), "exactly"),
        (lambda r: r.pop("digest"), "exactly"),
    ],
)
def test_dstack_malformed_record_is_rejected(mutation: object, message: str) -> None:
    records = _dstack_records()
    mutation(records[0])  # type: ignore[operator]
    with pytest.raises(EventLogError, match=message):
        parse_dstack_event_log(json.dumps(records).encode())


def test_dstack_log_that_is_not_json_or_has_duplicate_keys_is_rejected() -> None:
    with pytest.raises(EventLogError, match="JSON"):
        parse_dstack_event_log(b"[{")
    with pytest.raises(EventLogError, match="duplicate"):
        parse_dstack_event_log(b'[{"imr": 0, "imr": 1}]')
    with pytest.raises(EventLogError, match="JSON list"):
        parse_dstack_event_log(b'{"a": 1}')


# --- Shroud runtime log ----------------------------------------------------------------------


def test_runtime_event_digest_is_the_documented_encoding() -> None:
    name, payload = "image-digest", b"sha256:" + b"a" * 64
    expected = hashlib.sha384(
        b"shroud/runtime-event/v1\x00"
        + len(name).to_bytes(4, "little")
        + name.encode()
        + len(payload).to_bytes(8, "little")
        + payload
    ).digest()
    assert runtime_event_digest(name, payload) == expected


def test_runtime_event_digest_separates_name_from_payload() -> None:
    # Without length prefixes "ab"+"c" and "a"+"bc" would collide.
    assert runtime_event_digest("ab", b"c") != runtime_event_digest("a", b"bc")


def test_runtime_log_round_trips_and_replays_to_the_extended_value() -> None:
    log = RuntimeEventLog()
    rtmr3 = bytes(48)
    for name, payload in [("image-digest", b"sha256:" + b"1" * 64), ("config-hash", b"\x02" * 32)]:
        rtmr3 = extend(rtmr3, log.append(name, payload))
    data = log.to_bytes()
    parsed = parse_event_log(data)
    assert parsed.format is EventLogFormat.SHROUD_RUNTIME
    assert [e.name for e in parsed.events] == ["image-digest", "config-hash"]
    assert replay(parsed.events)[3] == rtmr3
    assert RuntimeEventLog.from_bytes(data).to_bytes() == data
    result = replay_against([parsed], [bytes(48), bytes(48), bytes(48), rtmr3])
    assert result.ok
    assert not result.register(0).covered
    assert result.verified_events(3) == parsed.events


def test_runtime_log_with_altered_payload_no_longer_replays() -> None:
    log = RuntimeEventLog()
    rtmr3 = extend(bytes(48), log.append("config-hash", b"\x02" * 32))
    doc = json.loads(log.to_bytes())
    doc["events"][0]["payload"] = "03" * 32
    forged = parse_event_log(json.dumps(doc).encode())
    assert not replay_against([forged], [bytes(48)] * 3 + [rtmr3]).ok


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b'{"format": "shroud-runtime-event-log/2", "events": []}', "format"),
        (b'{"format": "shroud-runtime-event-log/1"}', "exactly"),
        (b'{"format": "shroud-runtime-event-log/1", "events": {}}', "list"),
        (b'{"format": "shroud-runtime-event-log/1", "events": [{"name": "a"}]}', "exactly"),
        (
            b'{"format": "shroud-runtime-event-log/1", "events": [{"name": "a", "payload": "0g"}]}',
            "hex",
        ),
        (
            b'{"format": "shroud-runtime-event-log/1", "events": '
            b'[{"name": "bad name", "payload": ""}]}',
            "name",
        ),
        (
            b'{"format": "shroud-runtime-event-log/1", "events": [{"name": 7, "payload": ""}]}',
            "string",
        ),
        (b'{"format": "x", "format": "y", "events": []}', "duplicate"),
        (b'{"format": NaN, "events": []}', "NaN"),
    ],
)
def test_runtime_log_malformed_document_is_rejected(document: bytes, message: str) -> None:
    with pytest.raises(EventLogError, match=message):
        parse_event_log(document)


def test_runtime_event_rejects_bad_names_and_huge_payloads() -> None:
    log = RuntimeEventLog()
    for bad in ["", "-lead", "a" * 65, "ünicode", "new\nline"]:
        with pytest.raises(EventLogError, match="name"):
            log.append(bad, b"")
    with pytest.raises(EventLogError, match="limit"):
        log.append("big", bytes(64 * 1024 + 1))
    assert log.events == ()


# --- combination and detection ---------------------------------------------------------------


def test_logs_are_told_apart_by_content() -> None:
    assert parse_event_log(ccel_sample()).format is EventLogFormat.CCEL
    assert parse_event_log(b"\n " + _dstack_log_bytes()).format is EventLogFormat.DSTACK_JSON
    assert parse_event_log(RuntimeEventLog().to_bytes()).format is EventLogFormat.SHROUD_RUNTIME


def test_ccel_and_runtime_log_combine_per_register() -> None:
    ccel = parse_ccel(ccel_sample())
    runtime = RuntimeEventLog()
    rtmr3 = extend(bytes(48), runtime.append("image-digest", b"x"))
    expected = list(replay(ccel.events))
    expected[3] = rtmr3
    result = replay_against([ccel, runtime.to_event_log()], expected)
    assert result.ok
    assert all(r.covered for r in result.registers)
    # The same CCEL against a quote whose RTMR1 differs: only RTMR1 is reported.
    expected[1] = bytes(48)
    result = replay_against([ccel, runtime.to_event_log()], expected)
    assert [r.matches for r in result.registers] == [True, False, True, True]


def test_uncovered_register_does_not_fail_the_replay() -> None:
    result = replay_against(
        [EventLog(EventLogFormat.SHROUD_RUNTIME, ())], [b"\x01" * 48] * 3 + [bytes(48)]
    )
    assert result.ok
    assert not result.register(0).covered
    assert not result.register(0).matches
    assert result.verified_events(0) is None


def test_replay_rejects_wrong_register_values() -> None:
    with pytest.raises(EventLogError, match="four"):
        replay_against([], [bytes(48)] * 3)


def _synthetic_ccel(events: list[tuple[int, int, list[tuple[int, bytes]], bytes]]) -> bytes:
    """A CCEL whose Spec ID event declares SHA-256 and SHA-384, then the given events."""
    spec = (
        b"Spec ID Event03\x00"
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 2)
        + struct.pack("<HHHH", 0x000B, 32, 0x000C, 48)
        + b"\x00"
    )
    out = struct.pack("<II", 1, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    for mr, etype, digests, data in events:
        out += struct.pack("<III", mr, etype, len(digests))
        for alg, value in digests:
            out += struct.pack("<H", alg) + value
        out += struct.pack("<I", len(data)) + data
    return out + b"\xff" * 64


def test_ccel_with_two_algorithms_uses_the_sha384_digest() -> None:
    sha384 = hashlib.sha384(b"kernel").digest()
    data = _synthetic_ccel([(2, 0xD, [(0x000B, b"\x01" * 32), (0x000C, sha384)], b"kernel")])
    (event,) = parse_ccel(data).events
    assert event.rtmr == 1
    assert event.digest == sha384


def test_ccel_event_without_a_sha384_digest_is_rejected() -> None:
    data = _synthetic_ccel([(2, 0xD, [(0x000B, b"\x01" * 32)], b"kernel")])
    with pytest.raises(EventLogError, match="no SHA-384 digest"):
        parse_ccel(data)


def _ccel_with_spec(
    algorithms: list[tuple[int, int]],
    events: list[tuple[int, int, list[tuple[int, bytes]], bytes]],
    *,
    declared_count: int | None = None,
    after_vendor_info: bytes = b"",
) -> bytes:
    """A CCEL with a hand-made Spec ID event (algorithm list, count and tail as given)."""
    count = len(algorithms) if declared_count is None else declared_count
    spec = (
        b"Spec ID Event03\x00"
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, count)
        + b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
        + b"\x00"
        + after_vendor_info
    )
    out = struct.pack("<II", 1, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    for mr, etype, digests, data in events:
        out += struct.pack("<III", mr, etype, len(digests))
        for alg, value in digests:
            out += struct.pack("<H", alg) + value
        out += struct.pack("<I", len(data)) + data
    return out + b"\xff" * 64


SHA384_ONLY = [(0x000C, 48)]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        (0, "lists 0 digest algorithms"),  # a log that commits to no hash at all
        (33, "lists 33 digest algorithms"),  # a hostile count bounds nothing else
    ],
)
def test_ccel_spec_id_with_an_out_of_range_algorithm_count_is_rejected(
    declared: int, message: str
) -> None:
    algorithms = SHA384_ONLY + [(0x000B, 32)] * (max(declared, 1) - 1)
    data = _ccel_with_spec(algorithms[:declared] or SHA384_ONLY, [], declared_count=declared)
    with pytest.raises(EventLogError, match=message):
        parse_ccel(data)


def test_ccel_spec_id_with_bytes_after_vendor_info_is_rejected() -> None:
    # Extra bytes mean the event is not the structure we think it is: refuse, don't guess.
    data = _ccel_with_spec(SHA384_ONLY, [], after_vendor_info=b"\x00\x01")
    assert parse_ccel(_ccel_with_spec(SHA384_ONLY, [])).events == ()
    with pytest.raises(EventLogError, match="bytes after vendorInfo"):
        parse_ccel(data)


def test_ccel_event_with_more_digests_than_declared_algorithms_is_rejected() -> None:
    # Two SHA-384 digests in one event: which one was extended is ambiguous.
    first, second = hashlib.sha384(b"a").digest(), hashlib.sha384(b"b").digest()
    data = _ccel_with_spec(SHA384_ONLY, [(2, 0xD, [(0x000C, first), (0x000C, second)], b"a")])
    with pytest.raises(EventLogError, match="has 2 digests; the Spec ID event declares 1"):
        parse_ccel(data)


def test_ccel_no_action_event_does_not_enter_replay_against_the_quote() -> None:
    # EV_NO_ACTION events are informational; a replay that extends one would disagree with
    # every honest quote (and let a log author steer the replayed value).
    kernel = hashlib.sha384(b"kernel").digest()
    note = hashlib.sha384(b"note").digest()
    data = _ccel_with_spec(
        SHA384_ONLY,
        [(2, EV_NO_ACTION, [(0x000C, note)], b"note"), (2, 0xD, [(0x000C, kernel)], b"kernel")],
    )
    log = parse_ccel(data)
    assert [e.extended for e in log.events] == [False, True]
    rtmrs = [bytes(48), extend(bytes(48), kernel), bytes(48), bytes(48)]
    result = replay_against([log], rtmrs)
    assert result.ok
    assert result.register(1).matches
    assert result.verified_events(1) == (log.events[1],)


def test_json_log_above_the_size_limit_is_rejected_before_parsing() -> None:
    # 16 MiB of JSON is far beyond any real log; parsing it would only cost memory and time.
    data = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    assert parse_dstack_event_log(b"[" + b" " * 1024 + b"]").events == ()
    with pytest.raises(EventLogError, match="limit"):
        parse_dstack_event_log(data)


# --- hostile input never crashes -------------------------------------------------------------

_SAMPLE = ccel_sample()[:2048]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_raise_event_log_error(data: bytes) -> None:
    with contextlib.suppress(EventLogError):  # anything else (a crash) fails the test
        parse_event_log(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(_SAMPLE) - 1), st.integers(0, 255), st.integers(0, len(_SAMPLE)))
def test_corrupted_ccel_parses_or_raises_event_log_error(at: int, value: int, cut: int) -> None:
    data = bytearray(_SAMPLE)
    data[at] = value
    try:
        log = parse_ccel(bytes(data[:cut]))
    except EventLogError:
        return
    assert all(len(e.digest) == 48 and 0 <= e.rtmr < 4 for e in log.events)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_parses_or_raises_event_log_error(doc: object) -> None:
    for wrapped in (doc, [doc], {"format": "shroud-runtime-event-log/1", "events": [doc]}):
        with contextlib.suppress(EventLogError):
            parse_event_log(json.dumps(wrapped).encode())
