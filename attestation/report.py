"""The result of verifying a quote: one entry per check, and the outcome.

A verification never answers with a bare boolean. ``VerificationReport`` lists every check in
the order it ran, each with a status and a human-readable detail, plus the TCB status and
advisory IDs Intel's collateral assigned. A check that could not run because an earlier one
failed is recorded as ``SKIP``, so a reader sees what was and was not established.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from attestation.quote import Quote


class CheckStatus(StrEnum):
    PASS = "pass"  # noqa: S105 (a check status, not a password)
    FAIL = "fail"
    SKIP = "skip"


class TcbStatus(StrEnum):
    """Intel's TCB status names, as they appear in TCB Info and QE Identity collateral."""

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"

    @property
    def severity(self) -> int:
        """Rank used to combine statuses: the worst (highest) wins, as in Intel's QVL."""
        return _SEVERITY[self]


# Intel QVL's convergence rules order the statuses this way (UpToDate best, Revoked worst).
_SEVERITY = {
    TcbStatus.UP_TO_DATE: 0,
    TcbStatus.SW_HARDENING_NEEDED: 1,
    TcbStatus.CONFIGURATION_NEEDED: 2,
    TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: 3,
    TcbStatus.OUT_OF_DATE: 4,
    TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED: 5,
    TcbStatus.REVOKED: 6,
}


@dataclass(frozen=True)
class CheckResult:
    """One verification step: a stable machine name, its status and why."""

    name: str
    status: CheckStatus
    detail: str
    # A FAIL only because ``now`` is outside a validity window (a certificate, CRL, TCB Info
    # or QE Identity expired or not yet valid): verifying at another time or with fresher
    # collateral may pass. Every other failure is about the evidence itself.
    outside_validity: bool = False


@dataclass
class VerificationReport:
    """Everything a verification established about one quote.

    ``ok`` is true only when every check passed (none failed, none skipped). TCB status and
    advisories are reported even when they are not UpToDate: whether such a status is
    acceptable is the policy's decision, not the verifier's (``attestation.policy``).
    """

    checks: list[CheckResult] = field(default_factory=list)
    quote: Quote | None = None
    tcb_status: TcbStatus | None = None
    platform_tcb_status: TcbStatus | None = None
    qe_tcb_status: TcbStatus | None = None
    tdx_module_tcb_status: TcbStatus | None = None
    advisory_ids: tuple[str, ...] = ()
    fmspc: bytes | None = None
    verified_at: int | None = None  # UNIX seconds the verification was evaluated at
    # The oldest of the TCB Info and QE Identity issueDate and the PCK CRL thisUpdate: how old
    # the collateral the verdict rests on is (policy: max_collateral_age_seconds).
    collateral_issue_date: int | None = None
    # The lower of the TCB Info's and QE Identity's tcbEvaluationDataNumber: which of Intel's
    # TCB recoveries the collateral reflects (policy: min_tcb_evaluation_data_number).
    tcb_evaluation_data_number: int | None = None
    trusted_root_sha256: bytes | None = None  # fingerprint of the root the chains ended in
    # The last second at which every validity window this verification relied on (collateral,
    # CRLs, certificates) still holds; None when no window was checked.
    valid_until: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.status is CheckStatus.PASS for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status is CheckStatus.FAIL]

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``; KeyError if it was never recorded."""
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def expired(self) -> bool:
        """Whether some check failed only because of the verification time (see CheckResult)."""
        return any(c.outside_validity for c in self.checks)

    def add(
        self, name: str, status: CheckStatus, detail: str, *, outside_validity: bool = False
    ) -> CheckResult:
        result = CheckResult(name, status, detail, outside_validity)
        self.checks.append(result)
        return result
