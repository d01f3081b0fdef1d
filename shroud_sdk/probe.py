"""Take a running bridge's evidence through one real handshake, for an operator's tooling.

``take_bridge_evidence(url)`` opens an attested connection exactly as a client does (same
session code, same TLS and proxy handling), with a policy that verifies the quote in full
(DCAP chain, signatures, collateral, event-log replay) but pins no measurement, since the point
is to learn the measurements. It keeps the evidence and the report, sends the authenticated
CLOSE and returns; no request is ever sent, so nothing reaches the bridge's upstream.

Used by ``shroud-attest policy init --bridge`` to draft the policy an operator then reviews and
publishes. Deliberately not a client: accepting "whatever the bridge measures" is right only
for a human about to read the values, never for sending a prompt.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field

from attestation.policy import Policy
from attestation.report import TcbStatus
from shroud_sdk.channel.evidence import Evidence
from shroud_sdk.errors import HandshakeError
from shroud_sdk.session import AsyncSession, SessionConfig
from shroud_sdk.verifier import (
    AttestationReport,
    AttestationVerifier,
    QuoteCollateralSource,
    VerifiedAttestation,
)


@dataclass(frozen=True)
class BridgeEvidence:
    """What one handshake showed: the raw evidence, its verification report, and where from."""

    url: str
    audience: str
    evidence: Evidence = field(repr=False)
    report: AttestationReport


class _KeepingVerifier:
    """The real verifier, remembering the evidence it accepted."""

    def __init__(self, inner: AttestationVerifier) -> None:
        self._inner = inner
        self.evidence: Evidence | None = None
        self.report: AttestationReport | None = None

    def __call__(self, evidence: Evidence, suite: int, /) -> VerifiedAttestation:
        verified = self._inner(evidence, suite)
        self.evidence, self.report = evidence, verified.report
        return verified


def survey_policy(
    *, trusted_roots: tuple[str, ...] | None = None, simulated: bool = False
) -> Policy:
    """Verify genuineness only: every TCB status is reported, no measurement is pinned."""
    return Policy(
        allowed_tcb_statuses=frozenset(TcbStatus),
        allow_unpinned_measurements=True,
        trusted_roots=trusted_roots,
        allow_simulated_tee=simulated,
    )


def take_bridge_evidence(
    url: str,
    *,
    audience: str | None = None,
    trusted_roots: tuple[str, ...] | None = None,
    simulated: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    collateral_source: QuoteCollateralSource | None = None,
    timeout: float = 60.0,
) -> BridgeEvidence:
    """Handshake with the bridge at ``url`` and return its verified evidence.

    ``trusted_roots`` replace Intel's root (a simulated platform's root); ``simulated`` offers
    the simulated-TEE suite, and only that makes a simulated bridge answer. Raises the session's
    errors (``HandshakeError`` / ``AttestationFailedError`` with the report when the quote
    itself does not verify, ``SessionConnectError``, ``SessionTimeoutError``).
    """
    verifier = _KeepingVerifier(
        AttestationVerifier(
            survey_policy(trusted_roots=trusted_roots, simulated=simulated),
            collateral_source=collateral_source,
        )
    )
    config = SessionConfig(
        url=url,
        verifier=verifier,
        audience=audience or "",
        allow_simulated=simulated,
        ssl_context=ssl_context,
    )

    async def handshake() -> None:
        session = AsyncSession(config)
        try:
            # Connect and attest only: the session opens its link on demand, and no stream
            # (hence no request) is ever started on it.
            await session._usable_link(timeout)
        finally:
            await session.aclose()

    asyncio.run(handshake())
    if verifier.evidence is None or verifier.report is None:  # pragma: no cover - see above
        raise HandshakeError("evidence", "the handshake completed without verified evidence")
    return BridgeEvidence(url, config.audience, verifier.evidence, verifier.report)
