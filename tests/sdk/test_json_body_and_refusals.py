"""What both ends share: strict reading of JSON request bodies, and the overload refusal
vocabulary (close reasons, HTTP headers)."""

from __future__ import annotations

import json

import pytest

from shroud_sdk.json_body import NOT_JSON, JsonBodyError, parse_json_body
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
