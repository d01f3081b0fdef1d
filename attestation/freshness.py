"""Which of two collateral sets for one platform is newer: the guard against collateral rollback.

Intel re-issues collateral. A TCB recovery raises ``tcbEvaluationDataNumber`` and can turn a
platform's TCB level from UpToDate to OutOfDate; a new PCK CRL can revoke a platform's key. The
set from before stays inside its validity window for up to 30 days, so whoever hands out
collateral (a bridge shipping it in its evidence, a cache) can hand out the older one and
still pass every signature and date check.

``newer_collateral(own, offered)`` therefore keeps the caller's ``own`` collateral (from a
source the caller chose, such as ``attestation.collateral_cache.CollateralCache``) unless the
``offered`` set describes the same platform family (FMSPC) and is at least as new in *every*
respect: each signed body by (``tcbEvaluationDataNumber``, ``issueDate``), each CRL by
``thisUpdate``, and newer in at least one. A set that is newer in one part and older in
another is not taken: its older part could be the rollback. A tie keeps ``own``.

Comparing dates proves nothing by itself: whichever set is chosen is then verified in full
(signatures, chains, CRLs, validity windows), so an offered set with forged dates is refused
there. This module only orders; it verifies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from attestation.certs import load_der_crl
from attestation.collateral import Collateral
from attestation.errors import CertificateError


@dataclass(frozen=True)
class CollateralFreshness:
    """How new each part of one collateral set is (UNIX seconds; evaluation data numbers)."""

    fmspc: bytes
    tcb_info: tuple[int, int]  # (tcbEvaluationDataNumber, issueDate)
    qe_identity: tuple[int, int]  # (tcbEvaluationDataNumber, issueDate)
    root_ca_crl: int  # thisUpdate
    pck_crl: int  # thisUpdate

    @classmethod
    def of(cls, collateral: Collateral) -> CollateralFreshness:
        """Read the dates; ``CertificateError`` when a CRL cannot be parsed."""
        info, qe = collateral.tcb_info, collateral.qe_identity
        return cls(
            fmspc=collateral.fmspc,
            tcb_info=(info.tcb_evaluation_data_number, info.issue_date),
            qe_identity=(qe.tcb_evaluation_data_number, qe.issue_date),
            root_ca_crl=_this_update(collateral.root_ca_crl, "root CA CRL"),
            pck_crl=_this_update(collateral.pck_crl, "PCK CRL"),
        )

    def _parts(self) -> dict[str, tuple[int, ...]]:
        # Each part as a tuple, compared lexicographically: a higher evaluation data number
        # is newer whatever the dates say; for equal numbers, the later date.
        parts: dict[str, tuple[int, ...]] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "fmspc":
                parts[f.name] = value if isinstance(value, tuple) else (value,)
        return parts

    def older_parts(self, other: CollateralFreshness) -> list[str]:
        """The parts in which this set is older than ``other`` (by name)."""
        theirs = other._parts()
        return [name for name, mine in self._parts().items() if mine < theirs[name]]

    def supersedes(self, other: CollateralFreshness) -> bool:
        """Same FMSPC, no part older than ``other``'s, and at least one part newer."""
        return (
            self.fmspc == other.fmspc
            and not self.older_parts(other)
            and bool(other.older_parts(self))
        )


def newer_collateral(own: Collateral, offered: Collateral | None) -> Collateral:
    """``offered`` if it supersedes ``own`` (see the module docstring), otherwise ``own``.

    An ``offered`` set whose CRLs cannot be parsed is not newer; an ``own`` set whose CRLs
    cannot be parsed is kept (its verification then fails and says why).
    """
    if offered is None:
        return own
    try:
        mine = CollateralFreshness.of(own)
        theirs = CollateralFreshness.of(offered)
    except CertificateError:
        return own
    return offered if theirs.supersedes(mine) else own


def _this_update(der: bytes, what: str) -> int:
    return int(load_der_crl(der, what).last_update_utc.timestamp())
