"""The bridge's per-request decisions, without sockets: API keys, disclosed metadata against
the body, token caps, usage metering over SSE and JSON, upstream URL and header hygiene, and
the OpenAI shape of the bridge's own errors."""

from __future__ import annotations

import json

import httptools
import pytest
from websockets.frames import Frame, Opcode

from bridge import errors
from bridge.dispatch import PreparedBody, api_key_digests, authorized, prepare_body
from bridge.session import binary_frame_header
from bridge.upstream import (
    _describe,
    forward_request_headers,
    forward_response_headers,
    upstream_url,
)
from bridge.usage_meter import UsageMeter, usage_from
from shroud_sdk.channel.usage import Usage
from shroud_sdk.refusals import Overload, OverloadLimit

KEYS = api_key_digests(["sk-test-0123456789abcdef", "sk-test-fedcba9876543210"])


LIMIT = 100_000


def _body(**fields: object) -> bytes:
    return json.dumps({"model": "m", "messages": [], **fields}).encode()


def _prepared(result: PreparedBody | errors.ErrorResponse) -> PreparedBody:
    assert isinstance(result, PreparedBody)
    return result


def _refused(result: PreparedBody | errors.ErrorResponse) -> errors.ErrorResponse:
    assert isinstance(result, errors.ErrorResponse)
    return result


# -- API keys ---------------------------------------------------------------------------------


def test_request_without_a_key_is_unauthorized() -> None:
    assert not authorized((), KEYS)


def test_request_with_an_unknown_or_truncated_key_is_unauthorized() -> None:
    assert not authorized((("authorization", "Bearer sk-test-nope"),), KEYS)
    assert not authorized((("authorization", "Bearer sk-test-0123456789abcde"),), KEYS)
    assert not authorized((("authorization", "Bearer sk-test-0123456789abcdefx"),), KEYS)
    assert not authorized((("authorization", "Bearer "),), KEYS)
    # a lone surrogate from a broken header: refused, no crash
    assert not authorized((("authorization", "Bearer \udcff"),), KEYS)


def test_key_under_another_scheme_is_unauthorized() -> None:
    assert not authorized((("authorization", "Basic sk-test-0123456789abcdef"),), KEYS)


def test_any_configured_key_is_accepted() -> None:
    assert authorized((("authorization", "Bearer sk-test-fedcba9876543210"),), KEYS)
    assert authorized((("authorization", "bearer sk-test-0123456789abcdef"),), KEYS)


def test_no_configured_keys_accepts_anything() -> None:
    assert authorized((), ())


# -- disclosed metadata -----------------------------------------------------------------------


def test_disclosed_model_differing_from_body_is_rejected() -> None:
    refused = _refused(
        prepare_body("/v1/chat/completions", _body(), {"model": "other"}, max_containers=LIMIT)
    )
    assert refused.status == 400
    assert refused.code == "disclosure_mismatch"


def test_disclosed_true_does_not_match_body_integer_one() -> None:
    # JSON true == 1 in Python: the comparison must be by JSON type too.
    refused = _refused(
        prepare_body("/v1/completions", _body(stream=1), {"stream": True}, max_containers=LIMIT)
    )
    assert json.loads(refused.body)["error"]["param"] == "stream"


def test_disclosed_none_requires_the_field_to_be_absent() -> None:
    body = _body(max_tokens=9)
    refused = _refused(
        prepare_body("/v1/chat/completions", body, {"max_tokens": None}, max_containers=LIMIT)
    )
    assert refused.code == "disclosure_mismatch"
    assert _prepared(
        prepare_body("/v1/chat/completions", _body(), {"max_tokens": None}, max_containers=LIMIT)
    )


def test_a_body_with_too_many_containers_gets_400_with_the_limit() -> None:
    body = json.dumps({"model": "m", "input": [[1, 2]] * LIMIT}).encode()
    refused = _refused(prepare_body("/v1/embeddings", body, {}, max_containers=LIMIT))
    assert refused.status == 400
    assert refused.code == "invalid_request_body"
    assert f"more than {LIMIT} objects and arrays" in json.loads(refused.body)["error"]["message"]
    fits = json.dumps({"model": "m", "input": [[1, 2]] * (LIMIT - 2)}).encode()
    assert _prepared(prepare_body("/v1/embeddings", fits, {}, max_containers=LIMIT))


def test_disclosed_value_against_a_non_json_body_is_rejected() -> None:
    refused = _refused(
        prepare_body("/v1/chat/completions", b"not json", {"model": "m"}, max_containers=LIMIT)
    )
    assert refused.code == "disclosure_mismatch"


def test_matching_disclosure_forwards_the_body_unchanged() -> None:
    body = _body(max_tokens=7)
    prepared = _prepared(
        prepare_body(
            "/v1/chat/completions", body, {"model": "m", "max_tokens": 7}, max_containers=LIMIT
        )
    )
    assert prepared.body == body
    assert not prepared.usage_injected


def test_disclosed_max_tokens_caps_max_completion_tokens() -> None:
    prepared = _prepared(
        prepare_body(
            "/v1/chat/completions",
            _body(max_tokens=7, max_completion_tokens=700),
            {"max_tokens": 7},
            max_containers=LIMIT,
        )
    )
    document = json.loads(prepared.body)
    assert document["max_completion_tokens"] == 7
    assert document["max_tokens"] == 7


def test_stream_without_usage_gets_include_usage_injected() -> None:
    prepared = _prepared(
        prepare_body("/v1/chat/completions", _body(stream=True), {}, max_containers=LIMIT)
    )
    assert prepared.usage_injected
    assert json.loads(prepared.body)["stream_options"] == {"include_usage": True}


def test_client_choices_about_stream_usage_are_respected() -> None:
    for options in ({"include_usage": True}, {"include_usage": False}):
        body = _body(stream=True, stream_options=options)
        prepared = _prepared(prepare_body("/v1/chat/completions", body, {}, max_containers=LIMIT))
        assert prepared.body == body
        assert not prepared.usage_injected


def test_usage_is_not_injected_outside_chat_and_completions() -> None:
    body = _body(stream=True)
    prepared = _prepared(prepare_body("/v1/responses", body, {}, max_containers=LIMIT))
    assert prepared.body == body


# -- usage metering ---------------------------------------------------------------------------

_USAGE = {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def _sse(document: object) -> bytes:
    return b"data: " + json.dumps(document).encode() + b"\n\n"


def test_sse_usage_is_read_across_chunk_boundaries() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=False)
    stream = (
        _sse({"choices": [{"delta": {"content": "a"}}]})
        + _sse({"choices": [], "usage": _USAGE})
        + b"data: [DONE]\n\n"
    )
    out = b"".join(meter.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    out += meter.finish()
    assert out == stream  # passed through byte for byte
    assert meter.usage == Usage(4, 2, 6)


def test_injected_usage_chunk_is_stripped_and_nothing_else() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=True)
    content = _sse({"choices": [{"delta": {"content": "a"}}], "usage": None})
    out = meter.feed(content + _sse({"choices": [], "usage": _USAGE}) + b"data: [DONE]\n\n")
    out += meter.finish()
    assert out == content + b"data: [DONE]\n\n"
    assert meter.usage == Usage(4, 2, 6)


def test_crlf_separated_sse_events_are_recognised() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=False)
    event = b"data: " + json.dumps({"choices": [], "usage": _USAGE}).encode() + b"\r\n\r\n"
    assert meter.feed(event) == event
    assert meter.usage == Usage(4, 2, 6)


def test_usage_chunk_between_content_events_of_one_read_is_stripped_exactly() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=True)
    first = _sse({"choices": [{"delta": {"content": "a"}}], "usage": None})
    last = _sse({"choices": [{"delta": {"content": "b"}}]})
    out = meter.feed(first + _sse({"choices": [], "usage": _USAGE}) + last + b"data: [DO")
    out += meter.feed(b"NE]\n\n") + meter.finish()
    assert out == first + last + b"data: [DONE]\n\n"
    assert meter.usage == Usage(4, 2, 6)


def test_usage_in_a_multiline_data_event_is_read() -> None:
    # SSE joins "data:" lines with newlines; the usage key may end one line.
    meter = UsageMeter(sse=True, strip_usage_chunk=False)
    event = b'data: {"choices": [], "usage"\ndata: : ' + json.dumps(_USAGE).encode() + b"}\n\n"
    assert meter.feed(event) == event
    assert meter.usage == Usage(4, 2, 6)


def test_later_usage_null_does_not_erase_reported_usage() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=False)
    meter.feed(_sse({"choices": [], "usage": _USAGE}))
    chunk = _sse({"choices": [{"delta": {}}], "usage": None})
    assert meter.feed(chunk) is chunk  # forwarded as is, not even copied
    assert meter.usage == Usage(4, 2, 6)


def test_events_end_where_the_first_of_two_newlines_pairs_up() -> None:
    # "\n\n\n" is one separator and a newline that begins the next event: the odd newline
    # waits with that event, whether or not the chunk can carry usage.
    for tail in (b"", b'data: {"usage": null}'):
        meter = UsageMeter(sse=True, strip_usage_chunk=True)
        assert meter.feed(b"data: a\n\n\n" + tail) == b"data: a\n\n"
        assert meter.feed(b"\n\n") + meter.finish() == b"\n" + tail + b"\n\n"


def test_a_chunk_of_whole_events_without_usage_is_forwarded_as_is() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=True)
    chunk = _sse({"choices": [{"delta": {"content": "a"}}]}) * 3
    assert meter.feed(chunk) is chunk
    assert meter.feed(b"data: [DO") == b""
    assert meter.feed(b"NE]\n\n") == b"data: [DONE]\n\n"
    assert meter.finish() == b""


def test_oversized_sse_event_is_forwarded_unparsed() -> None:
    meter = UsageMeter(sse=True, strip_usage_chunk=True)
    huge = b'data: {"choices": [], "usage": {}, "pad": "' + b"x" * (1024 * 1024) + b'"}'
    out = meter.feed(huge) + meter.feed(b"\n\n") + meter.finish()
    assert out == huge + b"\n\n"
    assert meter.usage is None


def test_json_usage_is_read_at_the_end() -> None:
    meter = UsageMeter(sse=False, strip_usage_chunk=False)
    body = json.dumps({"choices": [], "usage": _USAGE}).encode()
    assert meter.feed(body[:10]) + meter.feed(body[10:]) == body
    assert meter.finish() == b""
    assert meter.usage == Usage(4, 2, 6)


def test_malformed_usage_yields_no_usage() -> None:
    assert usage_from({"prompt_tokens": -1, "completion_tokens": 0, "total_tokens": 0}) is None
    assert usage_from({"prompt_tokens": True, "total_tokens": 1}) is None
    assert usage_from("lots") is None
    assert usage_from({"prompt_tokens": 3, "total_tokens": 3}) == Usage(3, 0, 3)  # embeddings


# -- upstream URL and headers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "url"),
    [
        ("http://vllm:8000/v1", "/v1/chat/completions", "http://vllm:8000/v1/chat/completions"),
        ("http://vllm:8000/v1", "/v1/models?x=1", "http://vllm:8000/v1/models?x=1"),
        ("http://vllm:8000", "/v1/models", "http://vllm:8000/v1/models"),
        ("https://gw/openai/v1", "/v1/embeddings", "https://gw/openai/v1/embeddings"),
    ],
)
def test_openai_paths_map_onto_the_base_url(base: str, path: str, url: str) -> None:
    assert upstream_url(base, path) == url


def test_client_authorization_and_hop_by_hop_headers_are_dropped() -> None:
    forwarded = forward_request_headers(
        [
            ("authorization", "Bearer client-key"),
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("accept-encoding", "gzip, br"),
            ("cookie", "session=1"),
            ("content-type", "application/json"),
        ],
        upstream_api_key="upstream-key",
    )
    assert forwarded == [
        ("content-type", "application/json"),
        ("accept-encoding", "identity"),
        ("authorization", "Bearer upstream-key"),
    ]


def test_response_framing_headers_are_dropped_and_names_lowercased() -> None:
    assert forward_response_headers(
        [("Content-Type", "text/event-stream"), ("Transfer-Encoding", "chunked"), ("X-Id", "1")]
    ) == [("content-type", "text/event-stream"), ("x-id", "1")]


def test_an_upstream_cannot_pass_its_answer_off_as_a_bridge_refusal() -> None:
    forwarded = forward_response_headers(
        [("Retry-After", "5"), ("X-Shroud-Overload", "sessions"), ("x-shroud-anything", "1")]
    )
    assert forwarded == [("retry-after", "5")]


# -- error shapes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status"),
    [
        (errors.unauthorized(), 401),
        (errors.path_not_allowed(), 404),
        (errors.method_not_allowed(), 405),
        (errors.body_too_large(10), 413),
        (errors.overloaded(Overload(OverloadLimit.STREAMS_PER_SESSION)), 429),
        (errors.overloaded(Overload(OverloadLimit.BUFFERED_BYTES)), 503),
        (errors.request_timeout(30), 408),
        (errors.invalid_body("the JSON body nests too deeply"), 400),
        (errors.upstream_unavailable(), 502),
        (errors.overloaded(Overload(OverloadLimit.SHUTTING_DOWN)), 503),
        (errors.upstream_timeout(), 504),
        (errors.disclosure_mismatch("model"), 400),
    ],
)
def test_bridge_errors_have_the_openai_shape(response: errors.ErrorResponse, status: int) -> None:
    assert response.status == status
    document = json.loads(response.body)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"message", "type", "param", "code"}
    assert document["error"]["code"] == response.code
    headers = dict(response.headers)
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(response.body))


def test_overload_refusal_says_which_limit_and_when_to_retry() -> None:
    refusal = errors.overloaded(Overload(OverloadLimit.UNFINISHED_STREAMS, 2))
    headers = dict(refusal.headers)
    assert headers["retry-after"] == "2"
    assert headers["x-shroud-overload"] == "unfinished_streams"
    assert json.loads(refusal.body)["error"]["code"] == "unfinished_streams"


def test_upstream_failures_are_described_without_their_message() -> None:
    # Parser and connection errors may quote the upstream's bytes or the request's URL.
    leaky = httptools.HttpParserError("Invalid character in chunk size: data: secret")
    assert _describe(leaky) == "HttpParserError"
    wrapped = RuntimeError("could not reach http://up/v1/x?q=secret")
    wrapped.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert _describe(wrapped) == "RuntimeError (Connection refused)"


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_records_are_framed_as_websockets_frames_them(length: int) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    expected = Frame(Opcode.BINARY, payload).serialize(mask=False, extensions=[])
    assert binary_frame_header(length) + payload == expected
