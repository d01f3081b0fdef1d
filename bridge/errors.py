"""HTTP error responses the bridge itself produces, in the OpenAI error JSON shape.

When the bridge refuses a tunnelled request (no valid API key, path not allowed, body too large,
too many streams, upstream unreachable or slow, disclosed metadata contradicting the body) it
answers on the stream with an ordinary HTTP response whose status and body look exactly like
OpenAI's, so the ``openai`` client raises its usual exception class (``AuthenticationError``,
``NotFoundError``, ``RateLimitError``, ``InternalServerError``...) and applies its usual retry
rules. Messages are fixed text chosen here: they never echo request content, keys or upstream
bodies.

This module only builds responses; deciding when to send one is the job of
``bridge.dispatch`` and ``bridge.streaming``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from shroud_sdk.refusals import Overload

# The JSON media type every error carries; the openai client parses the body by it.
_JSON: Final = "application/json"


@dataclass(frozen=True)
class ErrorResponse:
    """A complete bridge-made HTTP response: status, headers and the JSON body bytes.

    ``code`` is the OpenAI ``error.code`` (also used as a stable name in logs and tests).
    """

    status: int
    code: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def openai_error(
    status: int,
    message: str,
    *,
    error_type: str,
    code: str,
    param: str | None = None,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> ErrorResponse:
    """An ``{"error": {"message", "type", "param", "code"}}`` response with ``status``."""
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}},
        separators=(",", ":"),
    ).encode("utf-8")
    headers = (("content-type", _JSON), ("content-length", str(len(body))), *extra_headers)
    return ErrorResponse(status, code, headers, body)


def unauthorized() -> ErrorResponse:
    """401: the tunnelled request carried no API key, or one this bridge does not accept."""
    return openai_error(
        401,
        "Incorrect or missing API key. Send it as 'Authorization: Bearer <key>'.",
        error_type="invalid_request_error",
        code="invalid_api_key",
    )


def path_not_allowed() -> ErrorResponse:
    """404: the path is not on this bridge's allowlist (the path itself is not echoed)."""
    return openai_error(
        404,
        "This path is not served by this bridge (it is not on the bridge's path allowlist).",
        error_type="invalid_request_error",
        code="path_not_allowed",
    )


def method_not_allowed() -> ErrorResponse:
    """405: TRACE and CONNECT are never forwarded (``bridge.dispatch`` says why)."""
    return openai_error(
        405,
        "This method is not forwarded by this bridge.",
        error_type="invalid_request_error",
        code="method_not_allowed",
        extra_headers=(("allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),),
    )


def body_too_large(limit: int) -> ErrorResponse:
    """413: the request body exceeds the configured limit."""
    return openai_error(
        413,
        f"The request body exceeds this bridge's limit of {limit} bytes.",
        error_type="invalid_request_error",
        code="request_too_large",
    )


def bad_request(message: str, code: str, param: str | None = None) -> ErrorResponse:
    """400 with a fixed ``message`` chosen by the caller (never request content)."""
    return openai_error(400, message, error_type="invalid_request_error", code=code, param=param)


def disclosure_mismatch(field: str) -> ErrorResponse:
    """400: a disclosed metadata field does not match the encrypted body's value."""
    return bad_request(
        f"The disclosed value of '{field}' does not match the request body; the request was "
        "not forwarded.",
        "disclosure_mismatch",
        param=field,
    )


def upstream_unavailable() -> ErrorResponse:
    """502: the upstream model server could not be reached or broke the HTTP protocol."""
    return openai_error(
        502,
        "The bridge could not reach the upstream model server.",
        error_type="server_error",
        code="upstream_unavailable",
    )


def upstream_timeout() -> ErrorResponse:
    """504: the upstream did not answer within the bridge's upstream timeout."""
    return openai_error(
        504,
        "The upstream model server did not respond in time.",
        error_type="server_error",
        code="upstream_timeout",
    )


def request_timeout(seconds: float) -> ErrorResponse:
    """408: the request's body did not end within the bridge's request-body timeout."""
    return openai_error(
        408,
        f"The request body did not arrive within {seconds:g} s; the request was dropped.",
        error_type="invalid_request_error",
        code="request_body_timeout",
    )


def invalid_body(reason: str) -> ErrorResponse:
    """400: the JSON body cannot be checked (``reason`` is fixed text, never content)."""
    return bad_request(f"The request body was refused: {reason}.", "invalid_request_body")


def overloaded(overload: Overload) -> ErrorResponse:
    """429 or 503 with Retry-After and ``x-shroud-overload``: a bound refused the request.

    ``code`` is the limit's name (``streams_per_session``, ``buffered_bytes``...), so a client
    can tell which bound it met (shroud_sdk.refusals).
    """
    limit = overload.limit
    return openai_error(
        overload.status,
        f"Refused: {limit.explanation}; retry in {overload.retry_after} s.",
        error_type="rate_limit_error" if overload.status == 429 else "server_error",
        code=limit.value,
        extra_headers=overload.headers(),
    )
