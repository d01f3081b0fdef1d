"""Attestation policy: what a verified quote must also satisfy before it is trusted.

``Policy`` is an immutable pydantic model, built in Python or loaded from TOML (unknown keys
are errors). ``Policy.evaluate`` takes a ``VerificationReport`` (and, optionally, the event-log
``ReplayResult``) and returns a ``PolicyResult`` listing *every* violation, each naming the
policy field, what it expected and what the quote had. A report that is not ``ok`` is itself a
violation, so a policy can never accept evidence the verifier rejected.

A policy that pins no measurement (MRTD, an RTMR, an aggregate image hash, a required RTMR3
event, or a custom check that declares it pins one) is refused unless it says
``allow_unpinned_measurements = true``: trusting "any TD on genuine hardware" must be a visible
choice, never an accident of defaults. The normalised TOML output states it.

Users add their own checks through the ``PolicyCheck`` protocol. Field-by-field reference:
docs/policy.md. This module does not verify signatures or replay logs; it only compares.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Protocol, runtime_checkable

import tomli_w
from cryptography import x509
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from attestation.errors import AttestationError, EventLogError, PolicyError
from attestation.eventlog import ReplayResult
from attestation.image_hash import ImageDigests, aggregate_image_hash, image_digests
from attestation.quote import MEASUREMENT_REGISTERS, TdReport
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.trust import certificate_sha256, intel_sgx_root_ca

# The registers a policy may pin by allowlist, as named in TOML and on TdReport.
PINNABLE_REGISTERS = MEASUREMENT_REGISTERS
# Pins of these describe *what code runs*; owner/config IDs alone do not (docs/policy.md).
_CODE_REGISTERS = frozenset({"mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3"})


def _hex_of(size: int) -> AfterValidator:
    def check(value: str) -> str:
        if not re.fullmatch(r"[0-9a-fA-F]*", value) or len(value) != 2 * size:
            raise ValueError(f"must be {size} bytes as {2 * size} hex digits")
        return value.lower()

    return AfterValidator(check)


Hex6 = Annotated[str, _hex_of(6)]
Hex8 = Annotated[str, _hex_of(8)]
Hex16 = Annotated[str, _hex_of(16)]
Hex48 = Annotated[str, _hex_of(48)]


def _non_empty(value: frozenset[Any] | None) -> frozenset[Any] | None:
    if value is not None and not value:
        raise ValueError("an empty allowlist accepts nothing; omit the key to leave it unpinned")
    return value


Allowlist48 = Annotated[frozenset[Hex48] | None, AfterValidator(_non_empty)]

_ADVISORY_RE = re.compile(r"[A-Z0-9]+(-[A-Z0-9]+)+")
_EVENT_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,128}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


class MaskedValue(_Frozen):
    """A bit field the quote must match under a mask: ``actual & mask == value & mask``.

    Both are 8 bytes as hex, in the quote's own (little-endian) byte order. ``value`` may not
    set bits outside ``mask``: such a bit would look pinned but never be compared.
    """

    value: Hex8
    mask: Hex8

    @model_validator(mode="after")
    def _value_within_mask(self) -> MaskedValue:
        value, mask = int(self.value, 16), int(self.mask, 16)
        if value & ~mask:
            raise ValueError("value sets bits outside mask; those bits would never be compared")
        return self

    def matches(self, actual: bytes) -> bool:
        mask = bytes.fromhex(self.mask)
        masked = bytes(a & m for a, m in zip(actual, mask, strict=True))
        return masked == bytes.fromhex(self.value)


class MeasurementPins(_Frozen):
    """Per-register allowlists (48-byte values as hex). ``None``: that register is not pinned."""

    mr_td: Allowlist48 = None
    rtmr0: Allowlist48 = None
    rtmr1: Allowlist48 = None
    rtmr2: Allowlist48 = None
    rtmr3: Allowlist48 = None
    mr_config_id: Allowlist48 = None
    mr_owner: Allowlist48 = None
    mr_owner_config: Allowlist48 = None

    def pinned(self) -> dict[str, frozenset[str]]:
        return {
            name: value for name in PINNABLE_REGISTERS if (value := getattr(self, name)) is not None
        }


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


class Policy(_Frozen):
    """An attestation policy. Field reference: docs/policy.md."""

    allowed_tcb_statuses: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})
    denied_advisory_ids: frozenset[str] = frozenset()
    min_tee_tcb_svn: Hex16 | None = None
    allowed_mr_seam: Allowlist48 = None
    td_attributes: MaskedValue | None = None
    xfam: MaskedValue | None = None
    measurements: MeasurementPins = MeasurementPins()
    allowed_image_hashes: Allowlist48 = None
    required_rtmr3_events: Mapping[str, frozenset[Hex48]] = Field(
        default_factory=lambda: MappingProxyType({})
    )
    allowed_fmspcs: Annotated[frozenset[Hex6] | None, AfterValidator(_non_empty)] = None
    trusted_roots: tuple[str, ...] | None = None  # PEM certificates; None = Intel's root
    max_collateral_age_seconds: Annotated[StrictInt, Field(gt=0)] | None = None
    allow_mr_service_td_nonzero: StrictBool = False
    allow_unpinned_measurements: StrictBool = False
    # Accept evidence from a simulated TEE (the channel's simulated suite). Off by default, and
    # even when on, the evidence must still chain to one of ``trusted_roots``: a policy that
    # trusts only Intel's root can never accept a simulated quote.
    allow_simulated_tee: StrictBool = False
    custom_checks: tuple[PolicyCheck, ...] = Field(default=(), exclude=True)

    def __init__(self, **data: Any) -> None:
        # A bad policy built in Python fails with the same typed error as a bad file.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise PolicyError(_describe(exc)) from None

    @field_serializer("required_rtmr3_events")
    def _serialise_events(self, value: Mapping[str, frozenset[str]]) -> dict[str, list[str]]:
        return {name: sorted(digests) for name, digests in sorted(value.items())}

    @field_validator("allowed_tcb_statuses")
    @classmethod
    def _some_status(cls, value: frozenset[TcbStatus]) -> frozenset[TcbStatus]:
        if not value:
            raise ValueError("no TCB status allowed: every quote would be rejected")
        return value

    @field_validator("denied_advisory_ids")
    @classmethod
    def _advisory_ids(cls, value: frozenset[str]) -> frozenset[str]:
        normalised = frozenset(v.upper() for v in value)
        for advisory in normalised:
            if _ADVISORY_RE.fullmatch(advisory) is None:
                raise ValueError(f"{advisory!r} is not an advisory ID like INTEL-SA-00960")
        return normalised

    @field_validator("required_rtmr3_events")
    @classmethod
    def _events(cls, value: Mapping[str, frozenset[str]]) -> Mapping[str, frozenset[str]]:
        for name, digests in value.items():
            if _EVENT_NAME_RE.fullmatch(name) is None:
                raise ValueError(f"event name {name!r} is empty, too long or has control chars")
            if not digests:
                raise ValueError(f"event {name!r}: an empty digest list accepts nothing")
        return MappingProxyType(dict(value))

    @field_validator("trusted_roots")
    @classmethod
    def _roots(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("an empty list trusts no root; omit the key to trust Intel's")
        for pem in value:
            try:
                x509.load_pem_x509_certificate(pem.encode("ascii"))
            except (ValueError, UnicodeEncodeError) as exc:
                raise ValueError(f"not a PEM certificate: {exc}") from None
            if pem.count("-----BEGIN") != 1:
                raise ValueError("each trusted root must be exactly one PEM certificate")
        return value

    @model_validator(mode="after")
    def _measurement_pinned(self) -> Policy:
        if not self.pins_measurements and not self.allow_unpinned_measurements:
            raise ValueError(
                "this policy pins no measurement (MRTD, an RTMR, an aggregate image hash, a "
                "required RTMR3 event, or a measurement-pinning custom check), so any TD on "
                "genuine hardware would pass; pin one, or set "
                "allow_unpinned_measurements = true to make that choice explicit"
            )
        return self

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base_dir: Path | None = None) -> Policy:
        """Build a policy from plain data (a parsed TOML document); raises ``PolicyError``.

        ``trusted_roots`` entries may be PEM text or paths to PEM files, relative to
        ``base_dir`` (the policy file's directory).
        """
        data = dict(data)
        roots = data.get("trusted_roots")
        if isinstance(roots, list):
            data["trusted_roots"] = tuple(_read_root(r, base_dir) for r in roots)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PolicyError(_describe(exc)) from None

    @classmethod
    def from_toml(cls, text: str, *, base_dir: Path | None = None) -> Policy:
        """Parse a TOML policy document; raises ``PolicyError`` naming the bad key."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy is not valid TOML: {exc}") from None
        return cls.from_mapping(data, base_dir=base_dir)

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        """Read a TOML policy file; raises ``PolicyError`` if unreadable or invalid."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy file {path}: {exc}") from None
        return cls.from_toml(text, base_dir=path.parent)

    # -- inspection -----------------------------------------------------------------------

    @property
    def pins_measurements(self) -> bool:
        """Whether anything here constrains which code the TD runs."""
        pinned = self.measurements.pinned()
        return bool(
            _CODE_REGISTERS & pinned.keys()
            or self.allowed_image_hashes
            or self.required_rtmr3_events
            or any(check.pins_measurements for check in self.custom_checks)
        )

    def trusted_root_certificates(self) -> tuple[x509.Certificate, ...]:
        """The roots to pass to ``verify_quote`` (Intel's pinned root unless overridden)."""
        if self.trusted_roots is None:
            return (intel_sgx_root_ca(),)
        return tuple(x509.load_pem_x509_certificate(p.encode("ascii")) for p in self.trusted_roots)

    def to_toml(self) -> str:
        """The normalised policy as TOML: sorted values, every choice spelled out.

        Fields left unpinned are listed in a leading comment, since TOML has no null.
        """
        doc: dict[str, Any] = {
            "allow_unpinned_measurements": self.allow_unpinned_measurements,
            "allowed_tcb_statuses": sorted(
                (s.value for s in self.allowed_tcb_statuses),
                key=lambda s: TcbStatus(s).severity,
            ),
            "denied_advisory_ids": sorted(self.denied_advisory_ids),
            "allow_mr_service_td_nonzero": self.allow_mr_service_td_nonzero,
            "allow_simulated_tee": self.allow_simulated_tee,
        }
        unpinned: list[str] = []
        optional: dict[str, Any] = {
            "min_tee_tcb_svn": self.min_tee_tcb_svn,
            "allowed_mr_seam": _sorted(self.allowed_mr_seam),
            "allowed_fmspcs": _sorted(self.allowed_fmspcs),
            "allowed_image_hashes": _sorted(self.allowed_image_hashes),
            "max_collateral_age_seconds": self.max_collateral_age_seconds,
            "trusted_roots": list(self.trusted_roots) if self.trusted_roots else None,
            "td_attributes": self.td_attributes.model_dump() if self.td_attributes else None,
            "xfam": self.xfam.model_dump() if self.xfam else None,
        }
        for key, value in optional.items():
            if value is None and key != "trusted_roots":
                unpinned.append(key)
            elif value is not None:
                doc[key] = value
        pins = {k: sorted(v) for k, v in self.measurements.pinned().items()}
        unpinned.extend(f"measurements.{n}" for n in PINNABLE_REGISTERS if n not in pins)
        if pins:
            doc["measurements"] = pins
        if self.required_rtmr3_events:
            doc["required_rtmr3_events"] = {
                k: sorted(v) for k, v in sorted(self.required_rtmr3_events.items())
            }
        else:
            unpinned.append("required_rtmr3_events")
        header = ["# Normalised Shroud attestation policy (docs/policy.md)."]
        if self.allow_unpinned_measurements and not self.pins_measurements:
            header.append("# WARNING: no measurement is pinned: any TD on genuine hardware passes.")
        if self.trusted_roots is None:
            header.append("# trusted_roots: the Intel SGX Root CA shipped with Shroud (pinned)")
        if unpinned:
            header.extend(
                textwrap.wrap(
                    "Not pinned: " + ", ".join(unpinned),
                    width=98,
                    initial_indent="# ",
                    subsequent_indent="#   ",
                )
            )
        if self.custom_checks:
            names = ", ".join(c.name for c in self.custom_checks)
            header.append(f"# Custom checks (Python only, not serialised): {names}")
        return "\n".join(header) + "\n" + tomli_w.dumps(doc)

    # -- evaluation -----------------------------------------------------------------------

    def evaluate(
        self, report: VerificationReport, replay: ReplayResult | None = None
    ) -> PolicyResult:
        """Compare the evidence with every field of this policy; return all violations.

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
            self.pins_measurements or self.allow_unpinned_measurements,
            "a measurement pin, or allow_unpinned_measurements = true",
            "nothing pinned",
        )
        self._check_tcb(report, check)
        self._check_platform(report, check)
        quote = report.quote
        if quote is None:
            check("quote", False, "a parsed quote in the report", "none")
            return PolicyResult(tuple(out), tuple(evaluated))
        td = quote.td_report
        self._check_td(td, check)
        aggregate = aggregate_image_hash(td)
        if self.allowed_image_hashes is not None:
            check(
                "allowed_image_hashes",
                aggregate.hex() in self.allowed_image_hashes,
                _one_of(self.allowed_image_hashes),
                aggregate.hex(),
            )
        digests = self._check_event_log(replay, check, out)
        self._check_required_events(replay, check)
        evidence = PolicyInput(report, td, replay, aggregate, digests)
        for custom in self.custom_checks:
            evaluated.append(f"custom.{custom.name}")
            out.extend(_run_custom(custom, evidence))
        return PolicyResult(tuple(out), tuple(evaluated))

    def _check_tcb(self, report: VerificationReport, check: _Check) -> None:
        status = report.tcb_status
        check(
            "allowed_tcb_statuses",
            status is not None and status in self.allowed_tcb_statuses,
            _one_of(s.value for s in self.allowed_tcb_statuses),
            status.value if status is not None else "no TCB status",
        )
        denied = sorted(self.denied_advisory_ids & {a.upper() for a in report.advisory_ids})
        check(
            "denied_advisory_ids",
            not denied,
            "none of " + (", ".join(sorted(self.denied_advisory_ids)) or "(none denied)"),
            ", ".join(denied),
        )

    def _check_platform(self, report: VerificationReport, check: _Check) -> None:
        if self.allowed_fmspcs is not None:
            fmspc = report.fmspc.hex() if report.fmspc is not None else "unknown"
            check(
                "allowed_fmspcs", fmspc in self.allowed_fmspcs, _one_of(self.allowed_fmspcs), fmspc
            )
        roots = {certificate_sha256(c).hex() for c in self.trusted_root_certificates()}
        used = report.trusted_root_sha256
        check(
            "trusted_roots",
            used is not None and used.hex() in roots,
            "a chain ending in " + _one_of(roots),
            used.hex() if used is not None else "no root recorded",
        )
        if self.max_collateral_age_seconds is not None:
            issued, at = report.collateral_issue_date, report.verified_at
            age = at - issued if issued is not None and at is not None else None
            check(
                "max_collateral_age_seconds",
                age is not None and age <= self.max_collateral_age_seconds,
                f"at most {self.max_collateral_age_seconds} s",
                f"{age} s" if age is not None else "collateral issue date or time unknown",
            )

    def _check_td(self, td: TdReport, check: _Check) -> None:
        if self.min_tee_tcb_svn is not None:
            minimum = bytes.fromhex(self.min_tee_tcb_svn)
            check(
                "min_tee_tcb_svn",
                len(td.tee_tcb_svn) == len(minimum)
                and all(a >= m for a, m in zip(td.tee_tcb_svn, minimum, strict=True)),
                f"every component >= {self.min_tee_tcb_svn}",
                td.tee_tcb_svn.hex(),
            )
        if self.allowed_mr_seam is not None:
            check(
                "allowed_mr_seam",
                td.mr_seam.hex() in self.allowed_mr_seam,
                _one_of(self.allowed_mr_seam),
                td.mr_seam.hex(),
            )
        for name in ("td_attributes", "xfam"):
            masked: MaskedValue | None = getattr(self, name)
            if masked is not None:
                actual: bytes = getattr(td, name)
                check(
                    name,
                    masked.matches(actual),
                    f"{masked.value} under mask {masked.mask}",
                    actual.hex(),
                )
        for name, allowed in self.measurements.pinned().items():
            value: bytes = getattr(td, name)
            check(f"measurements.{name}", value.hex() in allowed, _one_of(allowed), value.hex())
        service_td = td.mr_service_td
        if not self.allow_mr_service_td_nonzero:
            check(
                "allow_mr_service_td_nonzero",
                service_td is None or not any(service_td),
                "MRSERVICETD all zero",
                service_td.hex() if service_td is not None else "absent",
            )

    def _check_event_log(
        self, replay: ReplayResult | None, check: _Check, out: list[Violation]
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

    def _check_required_events(self, replay: ReplayResult | None, check: _Check) -> None:
        if not self.required_rtmr3_events:
            return
        events = replay.verified_events(3) if replay is not None else None
        for name, allowed in sorted(self.required_rtmr3_events.items()):
            field = f"required_rtmr3_events.{name}"
            if events is None:
                check(
                    field, False, _one_of(allowed), "no RTMR3 event log that replays to the quote"
                )
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


def _sorted(values: frozenset[str] | None) -> list[str] | None:
    return sorted(values) if values is not None else None


def _read_root(entry: object, base_dir: Path | None) -> object:
    if not isinstance(entry, str) or entry.lstrip().startswith("-----BEGIN"):
        return entry
    path = Path(entry)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"trusted_roots: cannot read {path}: {exc}") from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "policy"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{where}: {message}")
    return "invalid policy: " + "; ".join(parts)


__all__ = [
    "PINNABLE_REGISTERS",
    "MaskedValue",
    "MeasurementPins",
    "Policy",
    "PolicyCheck",
    "PolicyInput",
    "PolicyResult",
    "PolicyViolationError",
    "Violation",
]
