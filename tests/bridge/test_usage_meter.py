"""The top-level usage of a JSON response body, read as the body passes (``bridge.usage_meter``).

The reference is what ``json.loads`` makes of the whole body: the usage of one valid JSON object,
its last top-level ``usage`` member. The meter must agree with it however the body is cut into
chunks, without keeping the body: a body of any size costs bounded memory, and a hostile one
(endless token, endless nesting) is given up on rather than held.
"""

from __future__ import annotations

import itertools
import json
import tracemalloc
from collections.abc import Iterable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ijson.backends import python as python_backend

from bridge import usage_meter
from bridge.usage_meter import UsageMeter, usage_from
from shroud_sdk.channel.usage import Usage

MIB = 1024 * 1024
_USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
_OTHER = {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}


def _meter(chunks: Iterable[bytes]) -> Usage | None:
    meter = UsageMeter(sse=False, strip_usage_chunk=False)
    for chunk in chunks:
        assert meter.feed(chunk) is chunk  # forwarded as is, never copied
    assert meter.finish() == b""
    return meter.usage


def _meter_traced(chunks: Iterable[bytes]) -> tuple[Usage | None, int]:
    """:func:`_meter`, and the peak of the memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        usage = _meter(chunks)
        return usage, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def _reference(body: bytes) -> Usage | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return usage_from(document.get("usage")) if isinstance(document, dict) else None


def _rss() -> int:
    status = Path("/proc/self/status").read_text(encoding="ascii")
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def test_the_c_parser_reads_json_bodies() -> None:
    # The pure-Python fallback is about ten times slower: an install without the C extension
    # (the wheel's yajl) must show here, not as a slow bridge.
    assert usage_meter.JSON_BACKEND == "yajl2_c"


def test_top_level_usage_is_read_wherever_the_body_is_cut() -> None:
    body = json.dumps({"id": "x", "usage": _USAGE, "choices": [{"text": "é"}]}).encode()
    body += b"\n"  # trailing whitespace is still one JSON value
    for cut in range(len(body) + 1):
        assert _meter([body[:cut], body[cut:]]) == Usage(4, 2, 6), cut
    assert _meter(_pieces(body, 1)) == Usage(4, 2, 6)
    utf8 = json.dumps({"usage": _USAGE, "text": "日本語 ✓"}, ensure_ascii=False).encode()
    assert _meter(_pieces(utf8, 1)) == Usage(4, 2, 6)  # multi-byte characters cut too


def test_usage_nested_below_the_top_level_is_not_the_body_usage() -> None:
    nested = {"data": [{"object": "embedding", "usage": _USAGE}], "model": "m"}
    assert _meter([json.dumps(nested).encode()]) is None
    deeper = {"data": {"usage": _OTHER}, "usage": _USAGE, "extra": [{"usage": _OTHER}]}
    assert _meter([json.dumps(deeper).encode()]) == Usage(4, 2, 6)
    # A "usage" member of the usage object is not the usage either.
    inner = {"usage": {**_USAGE, "usage": _OTHER, "details": {"usage": _OTHER}}}
    assert _meter([json.dumps(inner).encode()]) == Usage(4, 2, 6)


def test_the_last_of_duplicate_usage_members_wins() -> None:
    first, second = json.dumps(_USAGE), json.dumps(_OTHER)
    assert _meter([b'{"usage": %s, "usage": %s}' % (first.encode(), second.encode())]) == Usage(
        9, 1, 10
    )
    assert _meter([b'{"usage": %s, "n": 1, "usage": null}' % first.encode()]) is None
    assert _meter([b'{"usage": %s, "usage": [1, 2]}' % first.encode()]) is None
    # Within the usage object too, as json.loads reads it.
    assert _meter([b'{"usage": {"prompt_tokens": 1, "prompt_tokens": 3, "total_tokens": 3}}']) == (
        Usage(3, 0, 3)
    )


def test_a_key_spelled_with_escapes_is_the_same_key() -> None:
    body = b'{"\\u0075sage": {"prompt_\\u0074okens": 3, "total_tokens": 3}}'
    assert _meter([body]) == _reference(body) == Usage(3, 0, 3)


def test_a_count_that_is_an_object_or_array_makes_the_usage_malformed() -> None:
    for value in ('{"n": 1}', "[1]", "[]", "{}"):
        body = b'{"usage": {"prompt_tokens": 3, "completion_tokens": %s, "total_tokens": 3}}'
        assert _meter([body % value.encode()]) is None, value


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}',  # cut short
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}}}',
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}} x',  # trailing garbage
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}}{}',  # a second value
        b'[{"usage": {"prompt_tokens": 4, "total_tokens": 4}}]',  # a top-level array
        b'"usage"',
        b"4",
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}, "a": NaN}',
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}, "a": "\xff"}',  # not UTF-8
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}, "a": 1,}',
        b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}} // note',
    ],
)
def test_a_body_that_is_not_one_valid_json_object_has_no_usage(body: bytes) -> None:
    assert _meter([body]) is None
    assert _meter(_pieces(body, 3)) is None


def test_an_integer_past_64_bits_makes_the_body_unreadable() -> None:
    # A limit of the parser's fast number mode (no Decimal): no count past 63 bits is valid, and
    # no OpenAI-style upstream writes such a number anywhere else.
    body = b'{"usage": {"prompt_tokens": 4, "total_tokens": 4}, "seed": 99999999999999999999}'
    assert _reference(body) == Usage(4, 0, 4)
    assert _meter([body]) is None
    fits = body.replace(b"99999999999999999999", str(2**63 - 1).encode())
    assert _meter([fits]) == Usage(4, 0, 4)


def test_a_body_far_larger_than_8_mib_gets_its_usage_read_in_bounded_memory() -> None:
    # An embeddings answer of 20 MiB (many inputs): only the three counts are kept.
    item = json.dumps({"object": "embedding", "index": 0, "embedding": [0.0123456789] * 1536})
    count = 20 * MIB // len(item) + 1
    body = b'{"object":"list","data":[%s],"model":"m","usage":%s}' % (
        ",".join([item] * count).encode(),
        json.dumps(_USAGE).encode(),
    )
    chunks = _pieces(body, 64 * 1024)
    usage, peak = _meter_traced(chunks)
    assert len(body) > 20 * MIB
    assert usage == Usage(4, 2, 6)
    assert peak < 4 * MIB  # the events of one 64 KiB chunk at most, not the body


def test_a_large_usage_object_costs_no_memory_beyond_its_three_counts() -> None:
    # A hostile upstream's usage object of 200,000 members (3 MiB): read, never built.
    members = ", ".join(f'"m{i}": {i}' for i in range(200_000))
    body = b'{"usage": {%s, "prompt_tokens": 5, "total_tokens": 5}}' % members.encode()
    chunks = _pieces(body, 64 * 1024)
    usage, peak = _meter_traced(chunks)
    assert usage == Usage(5, 0, 5)
    assert peak < 4 * MIB


def test_a_token_longer_than_the_bound_is_given_up_on_not_held() -> None:
    # The parser keeps an unfinished token whole: a 1.5 MiB string (an echoed prompt) is past
    # the bound, and an endless one from a hostile upstream (256 MiB here) costs nothing.
    usage = json.dumps(_USAGE).encode()
    within = b'{"text": "%s", "usage": %s}' % (b"a" * (MIB - 1024), usage)
    assert _meter(_pieces(within, 64 * 1024)) == Usage(4, 2, 6)
    beyond = b'{"text": "%s", "usage": %s}' % (b"a" * (3 * MIB // 2), usage)
    assert _meter(_pieces(beyond, 64 * 1024)) is None
    piece = b"a" * (64 * 1024)
    before = _rss()
    meter = UsageMeter(sse=False, strip_usage_chunk=False)
    meter.feed(b'{"usage": ' + usage + b', "text": "')
    for _ in range(256 * MIB // len(piece)):
        meter.feed(piece)
    growth = _rss() - before
    meter.feed(b'"}')
    meter.finish()
    assert meter.usage is None
    assert growth < 32 * MIB


def test_nesting_deeper_than_the_bound_is_given_up_on() -> None:
    usage = json.dumps(_USAGE).encode()
    shallow = b'{"a": %s%s, "usage": %s}' % (b"[" * 900, b"]" * 900, usage)
    assert _meter(_pieces(shallow, 100)) == Usage(4, 2, 6)
    # Past the bound: no usage, and no exception (json.loads raised RecursionError out of the
    # meter, at about 1,000 levels).
    deep = b'{"a": %s%s, "usage": %s}' % (b"[" * 100_000, b"]" * 100_000, usage)
    assert _meter(_pieces(deep, 64 * 1024)) is None


# -- agreement with json.loads, whatever the document and its cuts ------------------------------

_KEYS = st.sampled_from(["usage", "data", "prompt_tokens", "total_tokens", "x"]) | st.text(
    max_size=6
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=12,
)
_COUNT_VALUES = st.integers(-1, 50) | st.booleans() | st.none() | _VALUES
_USAGES = st.dictionaries(
    st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens", "other"]),
    _COUNT_VALUES,
    max_size=4,
)


@st.composite
def _documents(draw: st.DrawFn) -> bytes:
    """A JSON text, often an object with (possibly repeated) usage members, maybe damaged."""
    ascii_only = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        text = json.dumps(draw(_VALUES), ensure_ascii=ascii_only)
    else:
        members = draw(st.lists(st.tuples(_KEYS, _VALUES | _USAGES), max_size=5))
        pairs = (
            f"{json.dumps(k, ensure_ascii=ascii_only)}: {json.dumps(v, ensure_ascii=ascii_only)}"
            for k, v in members
        )
        text = "{" + ", ".join(pairs) + "}"
    body = text.encode()
    damage = draw(st.integers(0, 5))
    if damage == 0:
        body = body[: draw(st.integers(0, len(body)))]
    elif damage == 1:
        body += draw(st.sampled_from([b"x", b"{}", b"]", b" 1", b"\x00", b"\xff"]))
    return body


@st.composite
def _cuts(draw: st.DrawFn, body: bytes) -> list[bytes]:
    points = sorted(draw(st.lists(st.integers(0, len(body)), max_size=6)))
    edges = [0, *points, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@pytest.mark.parametrize("backend", ["yajl2_c", "python"])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_meter_agrees_with_json_loads(backend: str, data: st.DataObject) -> None:
    body = data.draw(_documents())
    chunks = data.draw(_cuts(body))
    if backend == "python":  # the fallback for an ijson without its C extension
        with mock.patch.object(usage_meter, "_ijson", python_backend):
            assert _meter(chunks) == _reference(body)
    else:
        assert _meter(chunks) == _reference(body)


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=64), size=st.integers(1, 8))
def test_arbitrary_bytes_never_raise_out_of_the_meter(body: bytes, size: int) -> None:
    assert _meter(_pieces(body, size)) == _reference(body)
