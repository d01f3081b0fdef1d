"""The SDK's error hierarchy (channel part).

Every failure the channel core can report is a ``ChannelError`` carrying ``check``: a short,
stable name of the check that failed (for logs, metrics and tests) and a message saying why.
Messages never contain keys, prompts or completions. The SDK adds its attestation errors here
later (an attestation failure raised by an evidence verifier should subclass ``HandshakeError``
so the channel core passes it through unchanged).

Fatal errors (``HandshakeError``, ``IntegrityError``, ``ProtocolError``) put the connection
into its failed state; ``LocalProtocolError`` and ``RekeyRequiredError`` leave it usable.
"""

from __future__ import annotations


class ShroudError(Exception):
    """Base class of every error raised by the Shroud SDK."""


class ChannelError(ShroudError):
    """A shroud/1 channel failure; ``check`` names the check that refused.

    ``ws_close_code`` is the WebSocket close code (4000-4999, private use) the I/O shell should
    send when the error ends the connection (docs/protocol.md, "Errors and closing").
    """

    ws_close_code: int = 4000
    fatal: bool = True

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.reason = message


class HandshakeError(ChannelError):
    """The handshake was refused: bad hello, no common suite, evidence or ``fin`` mismatch."""

    ws_close_code = 4001


class IntegrityError(ChannelError):
    """A record failed authentication, or the stream of records was truncated."""

    ws_close_code = 4002


class ProtocolError(ChannelError):
    """The peer broke the protocol: malformed encoding, illegal transition, exceeded limit."""

    ws_close_code = 4003


class MalformedCborError(ProtocolError):
    """A CBOR item broke the strict decoding rules (docs/protocol.md, "Encoding")."""


class LocalProtocolError(ChannelError):
    """The caller asked for something the protocol forbids; nothing was sent.

    The connection is unaffected (the h11 convention): fix the caller, not the peer.
    """

    fatal = False


class RekeyRequiredError(ChannelError):
    """A per-direction limit would be exceeded by sealing: open a new connection (handshake).

    Nothing was sealed; the connection can still receive and close.
    """

    fatal = False


class ConnectionFailedError(ChannelError):
    """The connection already failed; ``original`` is the error that made it fail."""

    def __init__(self, original: ChannelError) -> None:
        super().__init__(
            "connection-failed", f"connection failed earlier ({original.check}); no further use"
        )
        self.original = original
        self.ws_close_code = original.ws_close_code


class AttestationFailedError(HandshakeError):
    """The bridge's evidence was refused: not verified, or not what the policy allows.

    Raised by ``shroud_sdk.verifier.AttestationVerifier`` during the handshake, so no request
    byte has been sent. ``report`` is the ``shroud_sdk.verifier.AttestationReport`` when the
    evidence got far enough to produce one (None when, e.g., the quote did not even parse).
    The client surfaces it as ``shroud_sdk.AttestationError`` (an ``openai`` exception).
    """

    def __init__(self, check: str, message: str, report: object | None = None) -> None:
        super().__init__(check, message)
        self.report = report
