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
docs/policy.md. This module validates and serialises policies; the comparison itself is
``attestation.validate`` (which needs no pydantic). Neither verifies signatures nor replays logs.
"""

from __future__ import annotations

import re
import textwrap
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

import tomli_w
from cryptography import x509
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from attestation.errors import PolicyError
from attestation.eventlog import ReplayResult
from attestation.image_hash import OCI_DIGEST_RE
from attestation.quote import MEASUREMENT_REGISTERS
from attestation.report import TcbStatus, VerificationReport
from attestation.trust import intel_sgx_root_ca

# The result types live with the evaluation (which needs no pydantic); re-exported here, where
# users have always found them.
from attestation.validate import (
    DEFAULT_ALLOWED_TCB_STATUSES,
    DEFAULT_MAX_COLLATERAL_AGE_SECONDS,
    PolicyCheck,
    PolicyInput,
    PolicyResult,
    PolicyViolationError,
    Violation,
    evaluate_policy,
)

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


def _oci_digest(value: str) -> str:
    normalised = value.lower()
    if OCI_DIGEST_RE.fullmatch(normalised) is None:
        raise ValueError("must be an image digest like sha256:<64 hex digits>")
    return normalised


def _one_or_many(value: object) -> object:
    # `image_digest = "sha256:..."` for one release, a list while two are rolled out.
    return [value] if isinstance(value, str) else value


OciDigest = Annotated[str, AfterValidator(_oci_digest)]
ImageDigestPin = Annotated[
    frozenset[OciDigest] | None, BeforeValidator(_one_or_many), AfterValidator(_non_empty)
]
ConfigHashPin = Annotated[
    frozenset[Hex48] | None, BeforeValidator(_one_or_many), AfterValidator(_non_empty)
]

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


class Policy(_Frozen):
    """An attestation policy. Field reference: docs/policy.md."""

    allowed_tcb_statuses: frozenset[TcbStatus] = DEFAULT_ALLOWED_TCB_STATUSES
    denied_advisory_ids: frozenset[str] = frozenset()
    min_tee_tcb_svn: Hex16 | None = None
    allowed_mr_seam: Allowlist48 = None
    td_attributes: MaskedValue | None = None
    xfam: MaskedValue | None = None
    measurements: MeasurementPins = MeasurementPins()
    allowed_image_hashes: Allowlist48 = None
    # The bridge's image digest and configuration hash, read from a verified RTMR3 log.
    image_digest: ImageDigestPin = None
    config_hash: ConfigHashPin = None
    required_rtmr3_events: Mapping[str, frozenset[Hex48]] = Field(
        default_factory=lambda: MappingProxyType({})
    )
    allowed_fmspcs: Annotated[frozenset[Hex6] | None, AfterValidator(_non_empty)] = None
    trusted_roots: tuple[str, ...] | None = None  # PEM certificates; None = Intel's root
    max_collateral_age_seconds: Annotated[StrictInt, Field(gt=0)] | None = (
        DEFAULT_MAX_COLLATERAL_AGE_SECONDS
    )
    min_tcb_evaluation_data_number: Annotated[StrictInt, Field(ge=0)] | None = None
    allow_mr_service_td_nonzero: StrictBool = False
    allow_unpinned_measurements: StrictBool = False
    # Accept evidence from a simulated TEE (the channel's simulated suite). Off by default, and
    # even when on, the evidence must still chain to one of ``trusted_roots``: a policy that
    # trusts only Intel's root can never accept a simulated quote.
    allow_simulated_tee: StrictBool = False
    # Evidence modes (docs/protocol.md section 3.6): the longest attested-key window accepted,
    # and whether to insist on a quote over every handshake instead. The SDK's verifier enforces
    # both (a window is not part of a VerificationReport, so ``evaluate`` does not see it).
    max_evidence_lifetime_seconds: Annotated[StrictInt, Field(gt=0, le=86400)] = 3600
    fresh_quote: StrictBool = False
    # Accept only a hybrid (post-quantum) key agreement: the SDK then offers only hybrid
    # suites and refuses a bridge that negotiates a classical one. Channel-level, so not
    # judged by ``evaluate``; the SDK's verifier enforces it (docs/policy.md).
    require_post_quantum: StrictBool = False
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
            or self.image_digest
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
            "max_evidence_lifetime_seconds": self.max_evidence_lifetime_seconds,
            "fresh_quote": self.fresh_quote,
            "require_post_quantum": self.require_post_quantum,
        }
        unpinned: list[str] = []
        optional: dict[str, Any] = {
            "min_tee_tcb_svn": self.min_tee_tcb_svn,
            "allowed_mr_seam": _sorted(self.allowed_mr_seam),
            "allowed_fmspcs": _sorted(self.allowed_fmspcs),
            "allowed_image_hashes": _sorted(self.allowed_image_hashes),
            "image_digest": _one_or_list(self.image_digest),
            "config_hash": _one_or_list(self.config_hash),
            "max_collateral_age_seconds": self.max_collateral_age_seconds,
            "min_tcb_evaluation_data_number": self.min_tcb_evaluation_data_number,
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
        The comparison itself is ``attestation.validate.evaluate_policy``.
        """
        return evaluate_policy(self, report, replay)


def _sorted(values: frozenset[str] | None) -> list[str] | None:
    return sorted(values) if values is not None else None


def _one_or_list(values: frozenset[str] | None) -> str | list[str] | None:
    if values is None:
        return None
    return next(iter(values)) if len(values) == 1 else sorted(values)


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
