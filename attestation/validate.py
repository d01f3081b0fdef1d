"""Compare a verified quote with a policy's rules: the evaluation half of a policy.

``evaluate_policy`` takes anything shaped like ``PolicyRules`` (``attestation.policy.Policy``
is the one users build, from Python or TOML) plus a ``VerificationReport`` and the event-log
``ReplayResult``, and returns a ``PolicyResult`` listing *every* violation, each naming the
policy field, what it expected and what the quote had. A report that is not ``ok`` is itself a
violation, so a policy can never accept evidence the verifier rejected.

Why a module of its own: the policy *parser* (pydantic, TOML) costs tens of milliseconds to
import, and ``shroud-attest verify`` without a policy file must not pay that at every start.
``BASELINE_RULES`` are the rules of ``Policy(allow_unpinned_measurements=True)``, the CLI's
explicit "nothing pinned" choice; tests/attestation/test_policy.py proves the two agree on
every field and every verdict. This module parses nothing and checks no signature.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from attestation.errors import AttestationError, EventLogError
from attestation.image_hash import ImageDigests, aggregate_image_hash, image_digests
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.trust import certificate_sha256, intel_sgx_root_ca

if TYPE_CHECKING:
    from cryptography import x509

    from attestation.eventlog import ReplayResult
    from attestation.quote import TdReport

# The defaults ``Policy`` declares and ``BASELINE_RULES`` shares.
DEFAULT_ALLOWED_TCB_STATUSES: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})
# 30 days: Intel issues TCB Info, QE Identity and the PCK CRL valid for 30 days from their
# issue, and its service hands out freshly issued ones, so collateral a verifier obtained from
# Intel or a PCCS refreshing on schedule is never older; older collateral is a stale cache or
# a rollback. docs/policy.md ("Collateral freshness") explains the choice.
DEFAULT_MAX_COLLATERAL_AGE_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Violation:
    """One way the evidence failed the policy: the policy field, expectation and reality."""

    field: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, got {self.actual}"


@dataclass(frozen=True)
class PolicyInput:
    """What a policy (and each custom check) is evaluated on.

    ``image_digests`` is set only when an event log covering RTMR3 replayed to the quote.
    """

    report: VerificationReport
    td_report: TdReport
    replay: ReplayResult | None
    aggregate_image_hash: bytes
    image_digests: ImageDigests | None


@runtime_checkable
class PolicyCheck(Protocol):
    """A user-supplied check, run after the built-in ones.

    ``name`` labels its violations (``custom.<name>``). ``pins_measurements`` says whether the
    check constrains what code runs (e.g. "the compose hash is in this signed release list"),
    which satisfies the rule that a policy must pin some measurement. A check that raises is
    reported as a violation, never ignored.
    """

    @property
    def name(self) -> str: ...

    @property
    def pins_measurements(self) -> bool: ...

    def __call__(self, evidence: PolicyInput) -> Sequence[Violation]: ...


@dataclass(frozen=True)
class PolicyResult:
    """Every violation found (empty when the evidence satisfies the policy)."""

    violations: tuple[Violation, ...]
    evaluated: tuple[str, ...]  # the policy fields that were compared, in order

    @property
    def ok(self) -> bool:
        return not self.violations

    def raise_if_rejected(self) -> None:
        """Raise ``PolicyViolationError`` carrying this result unless it is ``ok``."""
        if self.violations:
            summary = "; ".join(str(v) for v in self.violations)
            raise PolicyViolationError(f"policy rejected the evidence: {summary}", self)


class PolicyViolationError(AttestationError):
    """The evidence verified but failed the policy; ``result`` lists every violation."""

    def __init__(self, message: str, result: PolicyResult) -> None:
        super().__init__(message)
        self.result = result


class MaskedRule(Protocol):
    """A bit field the quote must match under a mask (``attestation.policy.MaskedValue``)."""

    @property
    def value(self) -> str: ...

    @property
    def mask(self) -> str: ...

    def matches(self, actual: bytes) -> bool: ...


class RegisterPins(Protocol):
    """Per-register allowlists (``attestation.policy.MeasurementPins``)."""

    def pinned(self) -> dict[str, frozenset[str]]: ...


class PolicyRules(Protocol):
    """Everything ``evaluate_policy`` reads; field meanings are in docs/policy.md."""

    @property
    def allowed_tcb_statuses(self) -> frozenset[TcbStatus]: ...
    @property
    def denied_advisory_ids(self) -> frozenset[str]: ...
    @property
    def min_tee_tcb_svn(self) -> str | None: ...
    @property
    def allowed_mr_seam(self) -> frozenset[str] | None: ...
    @property
    def td_attributes(self) -> MaskedRule | None: ...
    @property
    def xfam(self) -> MaskedRule | None: ...
    @property
    def measurements(self) -> RegisterPins: ...
    @property
    def allowed_image_hashes(self) -> frozenset[str] | None: ...
    @property
    def required_rtmr3_events(self) -> Mapping[str, frozenset[str]]: ...
    @property
    def image_digest(self) -> frozenset[str] | None: ...
    @property
    def config_hash(self) -> frozenset[str] | None: ...
    @property
    def allowed_fmspcs(self) -> frozenset[str] | None: ...
    @property
    def max_collateral_age_seconds(self) -> int | None: ...
    @property
    def min_tcb_evaluation_data_number(self) -> int | None: ...
    @property
    def allow_mr_service_td_nonzero(self) -> bool: ...
    @property
    def allow_unpinned_measurements(self) -> bool: ...
    @property
    def custom_checks(self) -> tuple[PolicyCheck, ...]: ...
    @property
    def pins_measurements(self) -> bool: ...

    def trusted_root_certificates(self) -> tuple[x509.Certificate, ...]: ...


class _NoPins:
    def pinned(self) -> dict[str, frozenset[str]]:
        return {}


class BaselineRules:
    """``Policy(allow_unpinned_measurements=True)``'s rules, without the policy parser.

    Nothing pinned, only UpToDate TCB accepted, MRSERVICETD zero, Intel's root unless
    ``roots`` names others (already parsed certificates). What ``shroud-attest verify`` applies
    when given no policy file. Every rule but the roots is fixed, so the rules are read-only
    class attributes (``__slots__`` leaves no instance dictionary to override them in), not a
    dataclass: the CLI builds this on its start-up path, where a dataclass costs a millisecond.
    """

    __slots__ = ("_roots",)

    allowed_tcb_statuses: Final[frozenset[TcbStatus]] = DEFAULT_ALLOWED_TCB_STATUSES
    denied_advisory_ids: Final[frozenset[str]] = frozenset()
    min_tee_tcb_svn: Final[str | None] = None
    allowed_mr_seam: Final[frozenset[str] | None] = None
    td_attributes: Final[MaskedRule | None] = None
    xfam: Final[MaskedRule | None] = None
    measurements: Final[RegisterPins] = _NoPins()
    allowed_image_hashes: Final[frozenset[str] | None] = None
    required_rtmr3_events: Final[Mapping[str, frozenset[str]]] = MappingProxyType({})
    image_digest: Final[frozenset[str] | None] = None
    config_hash: Final[frozenset[str] | None] = None
    allowed_fmspcs: Final[frozenset[str] | None] = None
    max_collateral_age_seconds: Final[int | None] = DEFAULT_MAX_COLLATERAL_AGE_SECONDS
    min_tcb_evaluation_data_number: Final[int | None] = None
    allow_mr_service_td_nonzero: Final[bool] = False
    allow_unpinned_measurements: Final[bool] = True
    custom_checks: Final[tuple[PolicyCheck, ...]] = ()
    pins_measurements: Final[bool] = False

    def __init__(self, roots: tuple[x509.Certificate, ...] | None = None) -> None:
        self._roots = roots

    def __repr__(self) -> str:
        return f"BaselineRules(roots={self._roots!r})"

    def trusted_root_certificates(self) -> tuple[x509.Certificate, ...]:
        return self._roots if self._roots is not None else (intel_sgx_root_ca(),)


BASELINE_RULES = BaselineRules()


def evaluate_policy(
    rules: PolicyRules, report: VerificationReport, replay: ReplayResult | None = None
) -> PolicyResult:
    """Compare the evidence with every rule; return all violations (``Policy.evaluate``).

    ``replay`` is the event-log replay against the same quote
    (``eventlog.replay_against``); without it, ``required_rtmr3_events`` cannot be met.
    """
    out: list[Violation] = []
    evaluated: list[str] = []

    def check(field: str, ok: bool, expected: str, actual: str) -> None:
        evaluated.append(field)
        if not ok:
            out.append(Violation(field, expected, actual))

    failed = [c.name for c in report.checks if c.status is not CheckStatus.PASS]
    check(
        "verification",
        report.ok,
        "every verification check passes",
        "not passed: " + ", ".join(failed) if failed else "no checks recorded",
    )
    # Re-checked here because model_copy(update=...) skips validation.
    check(
        "allow_unpinned_measurements",
        rules.pins_measurements or rules.allow_unpinned_measurements,
        "a measurement pin, or allow_unpinned_measurements = true",
        "nothing pinned",
    )
    _check_tcb(rules, report, check)
    _check_platform(rules, report, check)
    quote = report.quote
    if quote is None:
        check("quote", False, "a parsed quote in the report", "none")
        return PolicyResult(tuple(out), tuple(evaluated))
    td = quote.td_report
    _check_td(rules, td, check)
    aggregate = aggregate_image_hash(td)
    if rules.allowed_image_hashes is not None:
        check(
            "allowed_image_hashes",
            aggregate.hex() in rules.allowed_image_hashes,
            _one_of(rules.allowed_image_hashes),
            aggregate.hex(),
        )
    digests = _check_event_log(replay, check, out)
    _check_image_pins(rules, replay, digests, check)
    _check_required_events(rules, replay, check)
    evidence = PolicyInput(report, td, replay, aggregate, digests)
    for custom in rules.custom_checks:
        evaluated.append(f"custom.{custom.name}")
        out.extend(_run_custom(custom, evidence))
    return PolicyResult(tuple(out), tuple(evaluated))


def _check_tcb(rules: PolicyRules, report: VerificationReport, check: _Check) -> None:
    status = report.tcb_status
    check(
        "allowed_tcb_statuses",
        status is not None and status in rules.allowed_tcb_statuses,
        _one_of(s.value for s in rules.allowed_tcb_statuses),
        status.value if status is not None else "no TCB status",
    )
    denied = sorted(rules.denied_advisory_ids & {a.upper() for a in report.advisory_ids})
    check(
        "denied_advisory_ids",
        not denied,
        "none of " + (", ".join(sorted(rules.denied_advisory_ids)) or "(none denied)"),
        ", ".join(denied),
    )


def _check_platform(rules: PolicyRules, report: VerificationReport, check: _Check) -> None:
    if rules.allowed_fmspcs is not None:
        fmspc = report.fmspc.hex() if report.fmspc is not None else "unknown"
        check(
            "allowed_fmspcs",
            fmspc in rules.allowed_fmspcs,
            _one_of(rules.allowed_fmspcs),
            fmspc,
        )
    roots = {certificate_sha256(c).hex() for c in rules.trusted_root_certificates()}
    used = report.trusted_root_sha256
    check(
        "trusted_roots",
        used is not None and used.hex() in roots,
        "a chain ending in " + _one_of(roots),
        used.hex() if used is not None else "no root recorded",
    )
    if rules.max_collateral_age_seconds is not None:
        issued, at = report.collateral_issue_date, report.verified_at
        age = at - issued if issued is not None and at is not None else None
        check(
            "max_collateral_age_seconds",
            age is not None and age <= rules.max_collateral_age_seconds,
            f"at most {rules.max_collateral_age_seconds} s since the oldest TCB Info or QE "
            "Identity issueDate or PCK CRL thisUpdate",
            f"{age} s" if age is not None else "collateral issue date or time unknown",
        )
    if rules.min_tcb_evaluation_data_number is not None:
        number = report.tcb_evaluation_data_number
        check(
            "min_tcb_evaluation_data_number",
            number is not None and number >= rules.min_tcb_evaluation_data_number,
            f"TCB Info and QE Identity tcbEvaluationDataNumber >= "
            f"{rules.min_tcb_evaluation_data_number}",
            str(number) if number is not None else "unknown",
        )


def _check_td(rules: PolicyRules, td: TdReport, check: _Check) -> None:
    if rules.min_tee_tcb_svn is not None:
        minimum = bytes.fromhex(rules.min_tee_tcb_svn)
        check(
            "min_tee_tcb_svn",
            len(td.tee_tcb_svn) == len(minimum)
            and all(a >= m for a, m in zip(td.tee_tcb_svn, minimum, strict=True)),
            f"every component >= {rules.min_tee_tcb_svn}",
            td.tee_tcb_svn.hex(),
        )
    if rules.allowed_mr_seam is not None:
        check(
            "allowed_mr_seam",
            td.mr_seam.hex() in rules.allowed_mr_seam,
            _one_of(rules.allowed_mr_seam),
            td.mr_seam.hex(),
        )
    for name in ("td_attributes", "xfam"):
        masked: MaskedRule | None = getattr(rules, name)
        if masked is not None:
            actual: bytes = getattr(td, name)
            check(
                name,
                masked.matches(actual),
                f"{masked.value} under mask {masked.mask}",
                actual.hex(),
            )
    for name, allowed in rules.measurements.pinned().items():
        value: bytes = getattr(td, name)
        check(f"measurements.{name}", value.hex() in allowed, _one_of(allowed), value.hex())
    service_td = td.mr_service_td
    if not rules.allow_mr_service_td_nonzero:
        check(
            "allow_mr_service_td_nonzero",
            service_td is None or not any(service_td),
            "MRSERVICETD all zero",
            service_td.hex() if service_td is not None else "absent",
        )


def _check_event_log(
    replay: ReplayResult | None, check: _Check, out: list[Violation]
) -> ImageDigests | None:
    if replay is None:
        return None
    diverging = [r for r in replay.registers if r.covered and not r.matches]
    check(
        "event_log",
        not diverging,
        "every logged register replays to the quote's value",
        "; ".join(r.detail for r in diverging),
    )
    if replay.verified_events(3) is None:
        return None
    try:
        return image_digests(replay)
    except EventLogError as exc:
        out.append(Violation("event_log", "well-formed image digest events", str(exc)))
        return None


def _check_image_pins(
    rules: PolicyRules, replay: ReplayResult | None, digests: ImageDigests | None, check: _Check
) -> None:
    # The values an operator publishes (a registry's image digest, the bridge's config hash),
    # compared with what the verified RTMR3 log recorded; both sides are shown on a mismatch.
    if rules.image_digest is None and rules.config_hash is None:
        return
    from attestation.eventlog import CONFIG_HASH_EVENT, IMAGE_DIGEST_EVENT

    found = {
        "image_digest": digests.image_digest if digests else None,
        "config_hash": digests.config_hash.hex() if digests and digests.config_hash else None,
    }
    events = {"image_digest": IMAGE_DIGEST_EVENT, "config_hash": CONFIG_HASH_EVENT}
    for name, allowed in (("image_digest", rules.image_digest), ("config_hash", rules.config_hash)):
        if allowed is None:
            continue
        value = found[name]
        if value is not None:
            actual = value
        elif replay is None or replay.verified_events(3) is None:
            actual = "no RTMR3 event log that replays to the quote"
        elif digests is None:
            actual = "a malformed RTMR3 digest event (see event_log)"
        else:
            actual = f"no {events[name]!r} event in RTMR3"
        check(name, value in allowed, _one_of(allowed), actual)


def _check_required_events(rules: PolicyRules, replay: ReplayResult | None, check: _Check) -> None:
    if not rules.required_rtmr3_events:
        return
    events = replay.verified_events(3) if replay is not None else None
    for name, allowed in sorted(rules.required_rtmr3_events.items()):
        field = f"required_rtmr3_events.{name}"
        if events is None:
            check(field, False, _one_of(allowed), "no RTMR3 event log that replays to the quote")
            continue
        # Only runtime events carry names, and their digests were recomputed from name and
        # payload by the parser: a digest the log merely claimed never gets here.
        found = [e.digest.hex() for e in events if e.name == name]
        bad = [d for d in found if d not in allowed]
        if not found:
            check(field, False, _one_of(allowed), "no such event in RTMR3")
        else:
            check(field, not bad, _one_of(allowed), ", ".join(bad or found))


class _Check(Protocol):
    def __call__(self, field: str, ok: bool, expected: str, actual: str) -> None: ...


def _run_custom(custom: PolicyCheck, evidence: PolicyInput) -> list[Violation]:
    field = f"custom.{custom.name}"
    try:
        found: list[object] = list(custom(evidence))
    except Exception as exc:  # a custom check that fails must reject, not crash or be ignored
        return [Violation(field, "the check to complete", f"raised {type(exc).__name__}: {exc}")]
    violations = [v for v in found if isinstance(v, Violation)]
    if len(violations) != len(found):
        return [Violation(field, "a sequence of Violation", "something else")]
    return violations


def _one_of(values: Iterable[str]) -> str:
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else "one of " + ", ".join(ordered)
