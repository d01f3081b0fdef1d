"""The production evidence verifier: a bridge's TDX evidence checked against a ``Policy``.

``AttestationVerifier`` is the ``EvidenceVerifier`` the SDK hands to the channel core. For each
handshake it parses the quote, obtains collateral (given, carried in the evidence, or from a
cache/fetcher), runs the full DCAP verification at the current time against the policy's
trusted roots, replays the event logs against the quote's RTMRs, evaluates the policy, and
returns the REPORTDATA the quote proves together with an ``AttestationReport``. The channel core
then compares that REPORTDATA with the one it computed for this handshake.

Any refusal raises ``AttestationFailedError`` naming the failed step (``check``) and carrying
the report when one exists. Simulated TEEs are refused unless ``policy.allow_simulated_tee``;
even then the quote must chain to one of the policy's roots, and the suite must match the
root: a simulated suite never with Intel's root, a real suite only with Intel's. With
``policy.require_post_quantum``, a classical (non-hybrid) suite is refused before anything else.

Attested-key evidence (docs/protocol.md §3.6) is judged first on its window, on every call:
refused when the policy wants a fresh quote per handshake (``fresh_quote``), when the window is
longer than ``max_evidence_lifetime_seconds``, or when the clock is outside it (allowing
``CLOCK_SKEW_SECONDS`` before ``not_before``, none after ``not_after``).

What is cached: collateral-level work (``VerifiedCollateral``: signatures, chains and CRLs of
the collateral, keyed by its exact bytes and the trusted roots), and, for attested-key evidence
only, *acceptances* in a process-wide ``VerdictCache`` keyed by the exact evidence bytes, the
collateral bytes, the suite and the policy, each valid until the earliest of the evidence
window's end, the collateral's validity and the policy's collateral-age limit. A cached
acceptance spares the quote, collateral and event-log work; the window and the policy (custom
checks included) are judged again on every use. A refusal is never cached. Fresh-mode quotes
differ per handshake and are always verified in full.
Deliberately not here: I/O to the bridge (``shroud_sdk.session``) and the verification logic
itself (``attestation``).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol
from weakref import WeakKeyDictionary

from attestation.collateral import Collateral
from attestation.errors import AttestationError
from attestation.eventlog import ReplayResult, parse_event_log, replay_against
from attestation.freshness import newer_collateral
from attestation.image_hash import ImageDigests, aggregate_image_hash, image_digests
from attestation.policy import Policy, PolicyResult
from attestation.quote import MEASUREMENT_REGISTERS, Quote
from attestation.quote_parser import parse_quote
from attestation.report import TcbStatus, VerificationReport
from attestation.trust import certificate_sha256, intel_sgx_root_ca
from attestation.verify import VerifiedCollateral, verify_quote, warm_up
from shroud_sdk.channel import cbor
from shroud_sdk.channel.constants import CLOCK_SKEW_SECONDS as CLOCK_SKEW_SECONDS
from shroud_sdk.channel.constants import (
    HYBRID_SUITES,
    SIMULATED_SUITES,
    Suite,
    describe_suites,
)
from shroud_sdk.channel.evidence import AttestedKey, Evidence, EvidenceMode
from shroud_sdk.errors import AttestationFailedError
from shroud_sdk.verdicts import PROCESS_VERDICTS, VerdictCache

# docs/protocol.md §3.3: the evidence type of an Intel TDX quote.
EVIDENCE_TYPE_TDX: Final = "tdx"
# Prepared collateral kept per verifier: one per (platform, roots) in practice.
_PREPARED_CACHE_SIZE: Final = 8
# The registers reported as "measurements", in the quote's order.
_MEASUREMENT_FIELDS: Final = (*MEASUREMENT_REGISTERS, "mr_seam")


class QuoteCollateralSource(Protocol):
    """Where collateral comes from when neither given nor carried by the evidence.

    ``attestation.collateral_cache.CollateralCache`` satisfies it (re-verifying its entries on
    every use); so does any object answering for a parsed quote at a time.
    """

    def get_for_quote(self, quote: Quote, now: int) -> Collateral: ...


@dataclass(frozen=True)
class AttestationReport:
    """Everything one verification of a bridge established, for users and for errors.

    ``verification`` has one entry per DCAP check; ``policy_result`` every policy violation
    (None when verification never got that far). ``image_hash`` is the aggregate image hash
    (``attestation.image_hash``) of the quoted TD.
    """

    verification: VerificationReport
    policy_result: PolicyResult | None
    suite: Suite  # the negotiated suite, e.g. Suite.HYBRID_P256_MLKEM768_HKDF_SHA256_AES256GCM
    simulated: bool
    collateral_origin: str  # "given", "evidence" or "source"
    image_hash: bytes | None = None
    replay: ReplayResult | None = field(default=None, repr=False)
    image_digests: ImageDigests | None = None  # from a verified RTMR3 log, when there is one
    # Fresh (a quote over the handshake) or attested key (a quote over a key that signed it);
    # for the latter, the key's validity window [not_before, not_after) in UNIX seconds.
    evidence_mode: EvidenceMode = EvidenceMode.FRESH
    evidence_window: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        """True only when every verification check passed and the policy had no violation."""
        return self.verification.ok and self.policy_result is not None and self.policy_result.ok

    @property
    def post_quantum(self) -> bool:
        """Whether the session's key agreement included ML-KEM-768 (a hybrid suite)."""
        return self.suite in HYBRID_SUITES

    @property
    def tcb_status(self) -> TcbStatus | None:
        """Intel's combined TCB status of the platform, QE and TDX module."""
        return self.verification.tcb_status

    @property
    def measurements(self) -> dict[str, str]:
        """The quoted TD's measurement registers as lowercase hex (empty if unparsed)."""
        quote = self.verification.quote
        if quote is None:
            return {}
        td = quote.td_report
        return {name: getattr(td, name).hex() for name in _MEASUREMENT_FIELDS}

    def summary(self) -> str:
        """A human-readable multi-line account: outcome, TCB, measurements, each check."""
        lines = [
            f"attestation: {'ACCEPTED' if self.ok else 'REJECTED'}"
            f"{' (SIMULATED TEE: proves nothing about hardware)' if self.simulated else ''}",
            f"tcb status: {self.tcb_status.value if self.tcb_status else 'unknown'}",
            f"evidence: {self.evidence_mode.value}"
            + (
                f" (valid {self.evidence_window[0]}..{self.evidence_window[1]})"
                if self.evidence_window
                else ""
            ),
            f"suite: {describe_suites([self.suite])}",
        ]
        if self.verification.advisory_ids:
            lines.append("advisories: " + ", ".join(self.verification.advisory_ids))
        if self.image_hash is not None:
            lines.append(f"image hash: {self.image_hash.hex()}")
        digests = self.image_digests
        if digests is not None and digests.image_digest is not None:
            lines.append(f"image digest (RTMR3): {digests.image_digest}")
        if digests is not None and digests.config_hash is not None:
            lines.append(f"bridge config hash (RTMR3): {digests.config_hash.hex()}")
        lines.extend(f"{name}: {value}" for name, value in self.measurements.items())
        lines.extend(
            f"check {c.name}: {c.status.value}" + (f" ({c.detail})" if c.detail else "")
            for c in self.verification.checks
        )
        if self.policy_result is not None:
            lines.extend(f"policy violation: {v}" for v in self.policy_result.violations)
        return "\n".join(lines)


@dataclass(frozen=True)
class VerifiedAttestation:
    """What ``AttestationVerifier`` returns to the channel core."""

    report_data: bytes = field(repr=False)
    report: AttestationReport


class AttestationVerifier:
    """Verify TDX evidence against ``policy``; an ``EvidenceVerifier`` for the channel core.

    ``collateral`` pins one collateral set for every quote (tests, air-gapped use).
    ``collateral_source`` (e.g. a ``CollateralCache``) is the client's own: with it, the
    bridge's collateral is used only when it supersedes the source's
    (``attestation.freshness``), so a bridge cannot roll collateral back. ``clock`` returns
    UNIX seconds (a parameter so tests can pin time).
    ``warm_up`` starts ``start_warm_up`` (once per process), so the first handshake does not
    pay OpenSSL's set-up. ``verdicts`` is where acceptances of attested-key evidence are
    kept (the process-wide cache by default, so every client in the process shares it).
    Thread-safe.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        collateral: Collateral | None = None,
        collateral_source: QuoteCollateralSource | None = None,
        clock: Callable[[], float] = time.time,
        warm_up: bool = True,
        verdicts: VerdictCache[Any] | None = None,
    ) -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be an attestation.policy.Policy, not {type(policy)}")
        self.policy = policy
        self._collateral = collateral
        self._source = collateral_source
        self._clock = clock
        self._roots = policy.trusted_root_certificates()
        self._intel_root = certificate_sha256(intel_sgx_root_ca())
        self._prepared: OrderedDict[bytes, VerifiedCollateral] = OrderedDict()
        self._lock = threading.Lock()
        if warm_up:
            start_warm_up()
        self._verdicts = PROCESS_VERDICTS if verdicts is None else verdicts
        self._verdict_scope = _verdict_scope(policy, collateral)
        self._collateral_digests: WeakKeyDictionary[VerifiedCollateral, bytes] = WeakKeyDictionary()

    @property
    def requires_fresh_quote(self) -> bool:
        """True when the policy wants a quote over every handshake (``fresh_quote``)."""
        return self.policy.fresh_quote

    def __call__(self, evidence: Evidence, suite: int, /) -> VerifiedAttestation:
        """Verify ``evidence`` for the negotiated ``suite``; raise ``AttestationFailedError``."""
        suite = _known_suite(suite)
        if self.policy.require_post_quantum and suite not in HYBRID_SUITES:
            raise AttestationFailedError(
                "post-quantum",
                f"the bridge negotiated suite {describe_suites([suite])}, a classical key "
                "agreement, but the policy sets require_post_quantum = true. Only a hybrid "
                "P-256 + ML-KEM-768 suite is accepted: the bridge must support suite 2 (ask "
                "its operator), or remove require_post_quantum to accept classical P-256",
            )
        now = int(self._clock())
        attested = evidence.attested_key
        verdict_key: Hashable | None = None
        collateral_digest = self._collateral_digest(evidence)
        if attested is not None:
            self._check_attested_key(attested, now)
            if collateral_digest is not None:
                verdict_key = self._verdict_key(evidence, collateral_digest, suite)
                cached = self._cached(verdict_key, now)
                if cached is not None:
                    return cached
        verified = self._verify(evidence, suite, now, verdict_key, collateral_digest)
        if attested is not None and verdict_key is not None:
            self._remember(verdict_key, verified, attested, now)
        return verified

    def _verify(
        self,
        evidence: Evidence,
        suite: Suite,
        now: int,
        verdict_key: Hashable | None,
        collateral_digest: bytes | None,
    ) -> VerifiedAttestation:
        simulated = suite in SIMULATED_SUITES
        if simulated and not self.policy.allow_simulated_tee:
            raise AttestationFailedError(
                "simulated-tee",
                f"the bridge negotiated suite {describe_suites([suite])}: it runs on a "
                "simulated TEE, which proves nothing about hardware, and the policy does not "
                "set allow_simulated_tee = true. For a development bridge, use the policy it "
                "wrote (shroud-bridge --dev-policy-out); never accept one in production",
            )
        if evidence.type != EVIDENCE_TYPE_TDX:
            raise AttestationFailedError(
                "evidence-type", f"evidence type {evidence.type[:32]!r} is not {'tdx'!r}"
            )
        try:
            quote = parse_quote(evidence.quote)
        except AttestationError as exc:
            raise AttestationFailedError("quote-format", str(exc)) from None
        prepared, origin = self._collateral_for(evidence, quote, now)
        attested = evidence.attested_key
        if attested is not None and collateral_digest is None:
            # Collateral from a source: known only now, so the verdict is looked up now.
            verdict_key = self._verdict_key(evidence, self._digest_of(prepared), suite)
            cached = self._cached(verdict_key, now)
            if cached is not None:
                return cached
        mode = evidence.mode
        window = None if attested is None else (attested.not_before, attested.not_after)
        report = verify_quote(
            quote,
            prepared,
            now=now,
            trusted_roots=self._roots,
            allow_mr_service_td=self.policy.allow_mr_service_td_nonzero,
        )
        partial = AttestationReport(
            report, None, suite, simulated, origin, evidence_mode=mode, evidence_window=window
        )
        if not report.ok:
            failed = ", ".join(f"{c.name} ({c.detail})" for c in report.failed) or "checks skipped"
            raise AttestationFailedError("verification", f"quote failed: {failed}", partial)
        self._check_suite_matches_root(report, simulated, partial)
        try:
            logs = [parse_event_log(log.data) for log in evidence.event_logs]
            replay = replay_against(logs, quote.td_report.rtmrs) if logs else None
        except AttestationError as exc:
            raise AttestationFailedError("event-log", str(exc), partial) from None
        unjudged = AttestationReport(
            report,
            None,
            suite,
            simulated,
            origin,
            aggregate_image_hash(quote.td_report),
            replay,
            _digests_of(replay),
            mode,
            window,
        )
        verified = VerifiedAttestation(quote.td_report.report_data, self._judged(unjudged))
        if attested is not None and collateral_digest is None and verdict_key is not None:
            self._remember(verdict_key, verified, attested, now)
        return verified

    def _judged(self, report: AttestationReport) -> AttestationReport:
        """``report`` with this policy's verdict in it; raise when the policy refuses."""
        result = self.policy.evaluate(report.verification, report.replay)
        judged = replace(report, policy_result=result)
        if not result.ok:
            summary = "; ".join(str(v) for v in result.violations)
            raise AttestationFailedError("policy", f"policy rejected the bridge: {summary}", judged)
        return judged

    # -- attested-key evidence (docs/protocol.md §3.6) ---------------------------------------

    def _check_attested_key(self, attested: AttestedKey, now: int) -> None:
        """The window rules, on every handshake (a cached verdict never skips them)."""
        if self.policy.fresh_quote:
            raise AttestationFailedError(
                "evidence-mode",
                "the policy requires a fresh quote per handshake (fresh_quote = true); the "
                "bridge offered its attested key",
            )
        maximum = self.policy.max_evidence_lifetime_seconds
        if attested.lifetime > maximum:
            raise AttestationFailedError(
                "evidence-lifetime",
                f"the attested key's window is {attested.lifetime} s, longer than the "
                f"policy's max_evidence_lifetime_seconds ({maximum} s)",
            )
        refusal = attested.window_refusal(now)
        if refusal is not None:
            raise AttestationFailedError("evidence-window", refusal)

    def _collateral_digest(self, evidence: Evidence) -> bytes | None:
        """What identifies the collateral before any work: None when a source decides."""
        if self._collateral is not None:
            return self._verdict_scope.pinned_collateral
        if self._source is not None:
            # The client's own source is asked on every handshake: whether the bridge's
            # collateral or the source's is used (attestation.freshness) can change between
            # two handshakes with the same evidence, so a verdict is looked up only after.
            return None
        if evidence.collateral is not None:
            return b"evidence:" + hashlib.sha256(evidence.collateral).digest()
        return None

    def _digest_of(self, prepared: VerifiedCollateral) -> bytes:
        with self._lock:
            digest = self._collateral_digests.get(prepared)
        if digest is None:
            digest = b"content:" + _collateral_content_digest(prepared.collateral)
            with self._lock:
                self._collateral_digests[prepared] = digest
        return digest

    def _verdict_key(self, evidence: Evidence, collateral_digest: bytes, suite: int) -> Hashable:
        # The evidence without its collateral, in the exact (canonical) encoding received.
        encoded = cbor.encode(evidence.to_cbor_value(with_collateral=False))
        return (
            hashlib.sha256(encoded).digest(),
            collateral_digest,
            struct.pack(">H", suite),
            self._verdict_scope.policy,
        )

    def _cached(self, key: Hashable, now: int) -> VerifiedAttestation | None:
        cached = self._verdicts.get(key, now)
        if not isinstance(cached, VerifiedAttestation):
            return None
        # The cache spares the quote, collateral and event-log work only. The policy is judged
        # again on every use: a custom check may read state that changed since (a release
        # list, a revocation list), and the cost is microseconds.
        return VerifiedAttestation(cached.report_data, self._judged(cached.report))

    def _remember(
        self, key: Hashable, verified: VerifiedAttestation, attested: AttestedKey, now: int
    ) -> None:
        """Keep an acceptance (only ever called once every check passed)."""
        report = verified.report.verification
        if report.valid_until is None:
            return
        ends = [attested.not_after, report.valid_until + 1]
        age_limit = self.policy.max_collateral_age_seconds
        if age_limit is not None:
            if report.collateral_issue_date is None:
                return
            ends.append(report.collateral_issue_date + age_limit + 1)
        self._verdicts.put(key, verified, verified_at=now, expires_at=min(ends))

    # -- internals ---------------------------------------------------------------------------

    def _collateral_for(
        self, evidence: Evidence, quote: Quote, now: int
    ) -> tuple[VerifiedCollateral, str]:
        if self._collateral is not None:
            return self._prepare(self._collateral), "given"
        if self._source is not None:
            return self._freshest_collateral(self._source, evidence, quote, now)
        if evidence.collateral is not None:
            # Keyed by the exact bytes received: a bridge sends the same collateral until it
            # refreshes it, so a warm client neither re-parses nor re-checks its signatures.
            # Validity windows are still compared with ``now`` by every verify_quote.
            raw = evidence.collateral
            return self._prepared_for(raw, lambda: self._parse_evidence_collateral(raw)), "evidence"
        raise AttestationFailedError(
            "collateral", "the evidence carries no collateral and no collateral source is set"
        )

    def _freshest_collateral(
        self, source: QuoteCollateralSource, evidence: Evidence, quote: Quote, now: int
    ) -> tuple[VerifiedCollateral, str]:
        # docs/attestation.md, "Collateral freshness": with a source of its own the client
        # never takes older collateral from the bridge, which could predate a TCB recovery or
        # a revocation; the bridge's is used only when it supersedes the client's own.
        try:
            own = source.get_for_quote(quote, now)
        except AttestationError as exc:
            # Not the bridge's collateral instead: blocking the client's source and shipping
            # old collateral is exactly the rollback this guards against.
            raise AttestationFailedError(
                "collateral",
                f"the client's own collateral source failed ({exc}); the bridge's collateral "
                "is not used in its place",
            ) from None
        raw = evidence.collateral
        shipped = self._shipped_collateral(raw) if raw is not None else None
        if raw is not None and shipped is not None and newer_collateral(own, shipped) is shipped:
            return self._prepared_for(raw, lambda: shipped), "evidence"
        return self._prepare(own), "source"

    def _shipped_collateral(self, raw: bytes) -> Collateral | None:
        """The bridge's collateral, parsed (from the prepared cache when seen before); None
        when it does not parse: with a source of its own the client has no need of it."""
        with self._lock:
            prepared = self._prepared.get(hashlib.sha256(raw).digest())
        if prepared is not None:
            return prepared.collateral
        try:
            return Collateral.from_json_text(raw)
        except (AttestationError, ValueError):
            return None

    @staticmethod
    def _parse_evidence_collateral(raw: bytes) -> Collateral:
        try:
            return Collateral.from_json_text(raw)
        except (AttestationError, ValueError) as exc:
            raise AttestationFailedError("collateral", f"evidence collateral: {exc}") from None

    def _prepare(self, collateral: Collateral) -> VerifiedCollateral:
        # Keyed by the collateral's exact content: the roots are fixed per verifier.
        content = json.dumps(collateral.to_json(), sort_keys=True).encode("utf-8")
        return self._prepared_for(content, lambda: collateral)

    def _prepared_for(self, content: bytes, load: Callable[[], Collateral]) -> VerifiedCollateral:
        key = hashlib.sha256(content).digest()
        with self._lock:
            prepared = self._prepared.get(key)
            if prepared is not None:
                self._prepared.move_to_end(key)
                return prepared
        prepared = VerifiedCollateral.prepare(load(), trusted_roots=self._roots)
        with self._lock:
            self._prepared[key] = prepared
            while len(self._prepared) > _PREPARED_CACHE_SIZE:
                self._prepared.popitem(last=False)
        return prepared

    def _check_suite_matches_root(
        self, report: VerificationReport, simulated: bool, partial: AttestationReport
    ) -> None:
        intel = report.trusted_root_sha256 == self._intel_root
        if simulated and intel:
            raise AttestationFailedError(
                "simulated-tee",
                "the quote chains to Intel's root but the bridge negotiated a simulated-TEE "
                "suite; no genuine bridge does that",
                partial,
            )
        if not simulated and not intel:
            raise AttestationFailedError(
                "simulated-tee",
                "the quote chains to a root other than Intel's (one of the policy's "
                "trusted_roots), but the bridge negotiated a real-hardware suite; only a "
                "simulated-TEE suite may use a non-Intel root",
                partial,
            )


_warm_up_lock = threading.Lock()
_WARM_UP_EXIT_WAIT: Final = 10.0  # seconds process exit waits for an unfinished warm-up
_warm_up_thread: threading.Thread | None = None


def start_warm_up() -> threading.Thread:
    """Run ``attestation.verify.warm_up`` on a daemon thread, once per process.

    Called when a verifier is built, so the one-time costs overlap the caller's own set-up and
    the handshake's network round trip instead of adding to them. Returns the thread (the same
    one on every call). A failure there is ignored: the first verification meets it again
    and reports it properly.
    """
    global _warm_up_thread
    with _warm_up_lock:
        if _warm_up_thread is None:
            _warm_up_thread = threading.Thread(
                target=_warm_up_quietly, name="shroud-attestation-warm-up", daemon=True
            )
            # A daemon thread still inside OpenSSL while the interpreter finalises aborts the
            # process (SIGABRT): a short script that builds a client and exits hit that about
            # half the time. atexit runs before finalisation; the wait is a few milliseconds.
            atexit.register(_warm_up_thread.join, _WARM_UP_EXIT_WAIT)
            _warm_up_thread.start()
        return _warm_up_thread


def _warm_up_quietly() -> None:
    with contextlib.suppress(Exception):
        warm_up()


@dataclass(frozen=True)
class _VerdictScope:
    """What, besides the evidence and collateral, decides a verdict: fixed per verifier."""

    # Digest of the policy's every serialisable field (roots included). Custom checks are not
    # serialisable and need not be: every use of a cached verdict runs the whole policy again.
    policy: bytes
    pinned_collateral: bytes | None


def _verdict_scope(policy: Policy, collateral: Collateral | None) -> _VerdictScope:
    pinned = None
    if collateral is not None:
        pinned = b"given:" + _collateral_content_digest(collateral)
    return _VerdictScope(hashlib.sha256(policy.model_dump_json().encode("utf-8")).digest(), pinned)


def _collateral_content_digest(collateral: Collateral) -> bytes:
    return hashlib.sha256(json.dumps(collateral.to_json(), sort_keys=True).encode()).digest()


def _known_suite(suite: int) -> Suite:
    try:
        return Suite(suite)
    except ValueError:
        raise AttestationFailedError("suite", f"unknown suite {suite}") from None


def _digests_of(replay: ReplayResult | None) -> ImageDigests | None:
    # For display only: the policy already judged the same events (a malformed one is a
    # violation there), so an unreadable log here just means "nothing to show".
    if replay is None or replay.verified_events(3) is None:
        return None
    try:
        return image_digests(replay)
    except AttestationError:
        return None
