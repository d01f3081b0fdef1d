"""What both ends share: strict reading of JSON request bodies, and the overload refusal
vocabulary (close reasons, HTTP headers)."""

from __future__ import annotations

import json

import pytest

from shroud_sdk.json_body import NOT_JSON, JsonBodyError, count_containers, parse_json_body
from shroud_sdk.refusals import MAX_RETRY_AFTER, Overload, OverloadLimit

# -- JSON bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"max_tokens": 100000, "model": "m", "max_tokens": 2}',
        b'{"messages": [{"role": "user", "role": "system"}]}',
        b'{"a": {"b": {"c": 1, "c": 1}}}',
    ],
)
def test_a_repeated_key_at_any_depth_is_refused(body: bytes) -> None:
    with pytest.raises(JsonBodyError) as caught:
        parse_json_body(body)
    assert caught.value.code == "duplicate_key"
    assert "100000" not in str(caught.value)  # fixed text, never the body


@pytest.mark.parametrize("body", [b"[" * 50_000, b'{"a":' * 50_000, b"[" * 5000 + b"]" * 5000])
def test_nesting_too_deep_is_a_typed_error_not_recursion_error(body: bytes) -> None:
    with pytest.raises(JsonBodyError) as caught:
        parse_json_body(body)
    assert caught.value.code == "too_deep"


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe{", b'{"a": 1', b""])
def test_what_is_not_json_is_said_so(body: bytes) -> None:
    assert parse_json_body(body) is NOT_JSON


def test_ordinary_bodies_parse_as_json_does() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 1}
    assert parse_json_body(json.dumps(body).encode()) == body


def _arrays(count: int) -> bytes:
    """A JSON array holding ``count - 1`` empty arrays: ``count`` containers."""
    return json.dumps([[]] * (count - 1)).encode()


def _too_many(body: bytes, limit: int) -> bool:
    with pytest.raises(JsonBodyError) as caught:
        parse_json_body(body, max_containers=limit)
    return caught.value.code == "too_many_containers" and str(limit) in caught.value.reason


def test_containers_up_to_the_limit_parse_and_one_more_is_refused() -> None:
    assert parse_json_body(_arrays(1000), max_containers=1000) == [[]] * 999
    assert _too_many(_arrays(1001), 1000)
    assert _too_many(b'{"a": {"b": [{}, {}]}}', 4)
    assert parse_json_body(b'{"a": {"b": [{}, {}]}}', max_containers=5) is not NOT_JSON


def test_without_a_limit_the_count_is_not_bounded() -> None:
    # The SDK parses its user's own body: no bound there.
    assert len(parse_json_body(_arrays(200_000))) == 199_999


@pytest.mark.parametrize(
    "text",
    [
        '{"code": "int main() { if (a[0]) { return b[1]; } }"}',  # braces in a string
        '{"code": "say \\"{[{[\\" and {[{["}',  # escaped quotes around braces
        '{"{[{[": "[[[[", "k": "\\\\"}',  # braces in keys; an escaped backslash ends a string
        '"{[{[{[{[{[{["',  # a top-level string
    ],
)
def test_braces_inside_strings_are_not_counted(text: str) -> None:
    document = json.loads(text)
    expected = 1 if isinstance(document, dict) else 0
    assert count_containers(text) == expected
    assert parse_json_body(text.encode(), max_containers=1) == document


def test_a_string_ending_in_an_escaped_backslash_does_not_hide_the_containers_after_it() -> None:
    # Read right-to-left or with \" taken for an escaped quote, the string "\\" would
    # swallow everything after it: those arrays would go uncounted.
    body = b'["\\\\", ' + b"[], " * 20 + b'"\\\\"]'
    assert count_containers(body.decode()) == 21
    assert _too_many(body, 20)


def _containers(document: object) -> int:
    if isinstance(document, dict):
        return 1 + sum(_containers(v) for v in document.values())
    if isinstance(document, list):
        return 1 + sum(_containers(v) for v in document)
    return 0


@pytest.mark.parametrize("shift", [0, 1, 2, 7, 30_001])
def test_strings_across_the_count_slices_are_counted_as_strings(shift: int) -> None:
    # The exact count reads 64 Ki characters at a time: a string may open in one slice and
    # close in a later one, and an odd number of quotes in a slice carries over.
    document = {
        "pad": "x" * shift,
        "code": ['{[\\"[{' * 20_000, [{"k": "]\\"}, []], "{" * 70_000],
        "more": [[], {}, [[{}]]] * 10,
    }
    text = json.dumps(document)
    assert len(text) > 3 * (1 << 16)
    assert count_containers(text) == _containers(document)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32-le"])
def test_the_count_reads_the_encoding_the_parser_reads(encoding: str) -> None:
    # json.loads(bytes) accepts UTF-16 and UTF-32; counting raw bytes would miss (or, for
    # big-endian without a BOM, skip) the containers the parser then builds.
    body = json.dumps([[]] * 100).encode(encoding)
    assert parse_json_body(body) == [[]] * 100
    assert _too_many(body, 100)


def test_a_body_that_cannot_open_a_container_is_not_counted() -> None:
    # Not JSON (a multipart form with source code in it): left to the caller, as before.
    body = b"--boundary\r\ncontent-type: text/plain\r\n\r\n" + b"{[" * 1000
    assert parse_json_body(body, max_containers=10) is NOT_JSON
    assert parse_json_body(b'"' + b"{" * 1000 + b'"', max_containers=1) == "{" * 1000


# -- overload refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [x for x in OverloadLimit if x is not OverloadLimit.UNKNOWN])
def test_a_close_reason_names_its_limit_and_fits_a_close_frame(limit: OverloadLimit) -> None:
    overload = Overload(limit, 3)
    reason = overload.close_reason()
    assert len(reason.encode()) <= 123
    assert Overload.from_close(1013, reason) == overload


def test_only_close_code_1013_is_an_overload() -> None:
    assert Overload.from_close(1008, "overloaded: sessions retry-after=1") is None
    assert Overload.from_close(1013, "something else") == Overload(OverloadLimit.UNKNOWN, 1)
    assert Overload.from_close(1013, "overloaded: mystery retry-after=2") == Overload(
        OverloadLimit.UNKNOWN, 2
    )


def test_an_unauthenticated_retry_hint_is_capped() -> None:
    capped = Overload.from_close(1013, "overloaded: sessions retry-after=999999")
    assert capped == Overload(OverloadLimit.SESSIONS, MAX_RETRY_AFTER)
    headers = [("Retry-After", "999999999999"), ("X-Shroud-Overload", "sessions")]
    parsed = Overload.from_http(503, headers)
    assert parsed == Overload(OverloadLimit.SESSIONS, 1)  # not a number we read: default


def test_http_refusals_keep_their_status_and_name_their_limit() -> None:
    parsed = Overload.from_http(429, [("retry-after", "4"), ("x-shroud-overload", "sessions")])
    # "sessions" is a 503 limit: a 429 naming it is read as an unknown 429 refusal.
    assert parsed == Overload(OverloadLimit.UNKNOWN, 4, 429)
    proxy = Overload.from_http(429, [])  # e.g. nginx limit_req in front of the bridge
    assert proxy is not None
    assert (proxy.limit, proxy.status, proxy.retry_after) == (OverloadLimit.UNKNOWN, 429, 1)
    assert Overload.from_http(502, []) is None
    named = Overload.from_http(
        429, [("retry-after", "2"), ("x-shroud-overload", "handshakes_per_source")]
    )
    assert named == Overload(OverloadLimit.HANDSHAKES_PER_SOURCE, 2)


def test_each_limit_has_its_status_and_headers() -> None:
    assert Overload(OverloadLimit.STREAMS_PER_SESSION).status == 429
    assert Overload(OverloadLimit.BUFFERED_BYTES).status == 503
    assert Overload(OverloadLimit.SOURCE_BUFFERED_BYTES, 2).headers() == (
        ("retry-after", "2"),
        ("x-shroud-overload", "source_buffered_bytes"),
    )
