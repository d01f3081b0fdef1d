"""Overload as typed ``openai`` errors: which limit refused, and when to retry.

A bridge refuses work it has no room for (``shroud_sdk.refusals`` lists the limits and how
each refusal travels). Whatever the way, the user meets it as an ``openai`` status error, the
class they already catch for it, and ``openai``'s own retry logic honours the bridge's
``Retry-After``:

- a refusal **inside the channel** is an authenticated HTTP 429/503 response: ``openai`` sees
  it as it would see one from OpenAI;
- a refusal of the **connection** (an HTTP 429/503 to the WebSocket upgrade, or close code
  1013 during the handshake) has no HTTP response to hand over, so the transport answers the
  request itself with an equivalent one (:func:`refusal_response_parts`, marked with the
  :data:`OVERLOAD_EXTENSION` response extension, the refusal being unauthenticated). Nothing
  of the request was sent.

``shroud_sdk.OpenAI``/``AsyncOpenAI`` then raise :class:`BridgeRateLimitError` (a subclass of
``openai.RateLimitError``: this client's own share was used up) or :class:`BridgeBusyError`
(a subclass of ``openai.InternalServerError``: the bridge as a whole is full), both
:class:`OverloadError`, once ``openai`` has used up its retries. A plain ``openai`` client over
a Shroud transport raises ``openai``'s own classes for the same responses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import openai

from shroud_sdk.errors import ShroudError
from shroud_sdk.refusals import OVERLOAD_HEADER, Overload, OverloadLimit

# Set on responses the transport made itself from an unauthenticated connection refusal.
OVERLOAD_EXTENSION: Final = "shroud.overload"


class OverloadError(ShroudError):
    """The bridge refused the request for lack of capacity; nothing reached the model.

    ``limit`` is the bound that refused (``shroud_sdk.refusals.OverloadLimit``),
    ``retry_after`` the seconds the bridge asked to wait, ``authenticated`` whether the
    refusal came inside the attested channel (False: it refused the connection before any key
    was agreed, or a proxy in front of it did).
    """

    limit: OverloadLimit
    retry_after: int
    authenticated: bool


class BridgeRateLimitError(openai.RateLimitError, OverloadError):
    """429: this client (its address or its connection) used its share of a bridge limit."""


class BridgeBusyError(openai.InternalServerError, OverloadError):
    """503: the bridge as a whole is at a limit (connections, handshakes, memory, shutdown)."""


def refusal_response_parts(overload: Overload) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and OpenAI-shaped JSON body answering a refused connection."""
    limit = overload.limit
    body = json.dumps(
        {
            "error": {
                "message": f"The bridge refused the connection: {limit.explanation}. Nothing "
                f"was sent; retry in {overload.retry_after} s.",
                "type": "rate_limit_error" if overload.status == 429 else "server_error",
                "param": None,
                "code": limit.value,
            }
        }
    ).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-length", str(len(body))),
        *overload.headers(),
    ]
    return overload.status, headers, body


def overload_status_error(message: str, *, body: object, response: Any) -> OverloadError | None:
    """The typed error for an overload refusal response (None for any other response).

    For ``openai`` clients' ``_make_status_error``: ``response`` is the httpx response.
    """
    status = response.status_code
    limit_name = response.headers.get(OVERLOAD_HEADER)
    if limit_name is None or status not in (429, 503):
        return None
    overload = Overload.from_http(status, list(response.headers.items()))
    if overload is None:  # pragma: no cover - the status was checked above
        return None
    # As openai's own clients do: the error object is the body's "error" member.
    data = body.get("error", body) if isinstance(body, Mapping) else body
    error: OverloadError
    if status == 429:
        error = BridgeRateLimitError(message, response=response, body=data)
    else:
        error = BridgeBusyError(message, response=response, body=data)
    error.limit = overload.limit
    error.retry_after = overload.retry_after
    error.authenticated = OVERLOAD_EXTENSION not in response.extensions
    return error
