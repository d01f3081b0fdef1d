"""The attestation package's error hierarchy.

Every failure the package can raise on bad input is one of these, so callers can catch
``AttestationError`` and be sure nothing else escapes from parsing or verification.
"""

from __future__ import annotations


class AttestationError(Exception):
    """Base class of every error raised by the attestation package."""


class QuoteFormatError(AttestationError):
    """A quote, or a structure inside it, is truncated, inconsistent or of an unknown kind.

    ``field`` names the structure member that was being read and ``offset`` its byte offset
    from the start of the quote, so that a user can find the fault with a hex dump.
    """

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None):
        where = []
        if field is not None:
            where.append(f"field {field}")
        if offset is not None:
            where.append(f"offset {offset}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)
        self.field = field
        self.offset = offset


class CertificateError(AttestationError):
    """A certificate, chain or CRL could not be parsed or is malformed."""


class CollateralError(AttestationError):
    """Collateral (TCB Info, QE Identity, CRLs, issuer chains) is missing or malformed."""


class CollateralFetchError(CollateralError):
    """Collateral could not be fetched from Intel PCS or a PCCS.

    ``url`` is the request that failed and ``status`` its HTTP status (``None`` when no response
    arrived: connection error, timeout, or a fault found in the response body).
    """

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class EventLogError(AttestationError):
    """An event log is malformed, or cannot be replayed."""


class PolicyError(AttestationError):
    """A policy file or object is invalid (unknown key, wrong type, bad value)."""
