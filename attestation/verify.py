"""DCAP verification of a TDX quote against Intel collateral, at an explicit time.

``verify_quote`` runs every check of Intel's quote verification, in the order Intel's QVL and
dcap-qvl use, and records each in a ``VerificationReport`` (name, pass/fail/skip, detail). It
never raises for a bad quote or bad collateral: a failure is a FAIL entry, and a check whose
trusted input a failed check should have provided is a SKIP entry. It raises only for
programming errors (wrong argument types, an empty root list).

The expensive, time-independent part (collateral signatures, issuer chains, CRL signatures,
and per platform the PCK chain) is done once by ``VerifiedCollateral.prepare`` and reused:
pass the ``VerifiedCollateral`` instead of a ``Collateral`` and a verification costs two ECDSA
verifications and some comparisons. Times are never cached: every certificate, CRL, TCB Info
and QE Identity window is compared with ``now`` on every call.

What "ok" means: ``report.ok`` is true when the quote is authentic (Intel root, unrevoked
chains, valid signatures, matching QE), the collateral is current and applies to this
platform, the TCB level is known and not Revoked, and the TD is not debuggable or otherwise
misconfigured. A TCB status such as OutOfDate is not a failed check: it is reported
(``tcb_status``, ``advisory_ids``) for the policy layer to accept or refuse.

Deliberately not here: quote parsing (``attestation.quote_parser``), collateral fetching,
and policy (which TCB statuses, measurements and advisories are acceptable).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from attestation.certs import (
    X509_DECODE_ERRORS,
    Window,
    describe,
    first_invalid,
    iso_time,
    load_der_crl,
    load_pem_chain,
    revoked_by,
    select_root,
    verify_chain,
    verify_crl_signature,
    verify_root,
)
from attestation.collateral import (
    QE_IDENTITY_ID_TD_QE,
    TCB_INFO_ID_TDX,
    Collateral,
    ModuleTcbLevel,
    TcbLevel,
)
from attestation.errors import AttestationError
from attestation.pck import PckExtensions, parse_pck_extensions, split_pem_chain
from attestation.quote import AttestationKeyType, Quote, TeeType
from attestation.quote_parser import parse_quote
from attestation.report import CheckStatus, TcbStatus, VerificationReport
from attestation.tcb import (
    TEE_TCB_SVN_MODULE_SVN,
    TEE_TCB_SVN_MODULE_VERSION,
    converge,
    find_module_identity,
    match_isv_level,
    match_platform_levels,
    module_identity_id,
    unite_advisories,
)
from attestation.trust import certificate_sha256, intel_sgx_root_ca, resolve_trusted_roots

__all__ = ["CHECK_NAMES", "VerifiedCollateral", "verify_quote", "warm_up"]

# --- Spec constants ---------------------------------------------------------------------------
# [QGL] Intel TDX DCAP Quote Generation Library API, "Quote Header": versions this verifier
# handles, and the vendor ID of Intel's Quoting Enclave.
SUPPORTED_QUOTE_VERSIONS = (4, 5)
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
# Intel QVL 4.1.2.4.4: a PCK leaf's subject CN contains this phrase.
SGX_PCK_CN_PHRASE = "SGX PCK Certificate"
# Intel QVL (TCB Info / QE Identity verification): the body's signer is the TCB Signing
# certificate ("Intel SGX TCB Signing"), a leaf issued directly by the root.
SGX_TCB_SIGNING_CN_PHRASE = "SGX TCB Signing"
# Intel TDX Module ABI spec, TDINFO_STRUCT.ATTRIBUTES (64-bit, little-endian):
#   bits 0-7 TUD (bit 0 DEBUG, 1-7 reserved), bits 8-31 SEC (8-27 reserved, 28 SEPT_VE_DISABLE,
#   29 MIGRATABLE, 30 PKS, 31 KL), bits 32-63 OTHER (32-62 reserved, 63 PERFMON).
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
TD_ATTR_MIGRATABLE = 1 << 29
TD_ATTR_RESERVED = 0x0000_0000_0000_00FE | 0x0000_0000_0FFF_FF00 | 0x7FFF_FFFF_0000_0000
# A migratable TD can be moved to a platform this quote says nothing about; dcap-qvl refuses
# bit 29 as well, so we refuse it with the reserved bits.
TD_ATTR_FORBIDDEN = TD_ATTR_RESERVED | TD_ATTR_MIGRATABLE
MR_SERVICE_TD_LEN = 48

# Every check, in the order it runs and appears in a report (docs/attestation.md lists them).
CHECK_NAMES = (
    "quote_format",
    "root_ca",
    "root_ca_crl",
    "quote_header",
    "collateral_type",
    "tcb_info_chain",
    "tcb_info_signature",
    "tcb_info_validity",
    "qe_identity_chain",
    "qe_identity_signature",
    "qe_identity_validity",
    "pck_crl",
    "pck_chain",
    "pck_revocation",
    "qe_report_signature",
    "qe_report_data",
    "qe_identity",
    "quote_signature",
    "fmspc_match",
    "platform_tcb",
    "tdx_module_identity",
    "td_attributes",
    "mr_service_td",
)

# The checks that concern the collateral alone (no quote), in ``CHECK_NAMES`` order.
COLLATERAL_CHECK_NAMES = (
    "root_ca",
    "root_ca_crl",
    "collateral_type",
    "tcb_info_chain",
    "tcb_info_signature",
    "tcb_info_validity",
    "qe_identity_chain",
    "qe_identity_signature",
    "qe_identity_validity",
    "pck_crl",
)

# A check runs only when the checks that establish its trusted inputs passed; otherwise it is
# recorded as SKIP naming them.
_DEPENDS: dict[str, tuple[str, ...]] = {
    "root_ca_crl": ("root_ca",),
    "quote_header": ("quote_format",),
    "tcb_info_chain": ("root_ca", "root_ca_crl"),
    "tcb_info_signature": ("tcb_info_chain",),
    "qe_identity_chain": ("root_ca", "root_ca_crl"),
    "qe_identity_signature": ("qe_identity_chain",),
    "pck_crl": ("root_ca", "root_ca_crl"),
    "pck_chain": ("quote_format", "root_ca"),
    "pck_revocation": ("pck_chain", "pck_crl", "root_ca_crl"),
    "qe_report_signature": ("pck_chain",),
    "qe_report_data": ("quote_format",),
    "qe_identity": ("quote_format", "qe_identity_signature", "collateral_type"),
    "quote_signature": ("quote_format",),
    "fmspc_match": ("pck_chain", "tcb_info_signature"),
    "platform_tcb": ("fmspc_match", "collateral_type"),
    "tdx_module_identity": ("quote_format", "tcb_info_signature", "collateral_type"),
    "td_attributes": ("quote_format",),
    "mr_service_td": ("quote_format",),
}

_T = TypeVar("_T")
_PCK_CACHE_SIZE = 64  # distinct platforms' PCK chains remembered per VerifiedCollateral


class _CheckError(Exception):
    """Internal: a check failed; the message is the report detail."""


class _Step(NamedTuple):
    """The time-independent outcome of a check, plus the windows ``now`` must fall in."""

    error: str | None
    detail: str = ""
    windows: tuple[Window, ...] = ()


class _PckResult(NamedTuple):
    """What checking one PCK chain established, independent of time."""

    chain_step: _Step
    revocation_step: _Step | None  # None when the CRLs it needs were unusable
    leaf_key: ec.EllipticCurvePublicKey | None
    extensions: PckExtensions | None


# Everything a check may raise on bad input. A check that raises anything else has a bug, and
# that is allowed to surface rather than be reported as a verdict.
_INPUT_ERRORS: tuple[type[Exception], ...] = (
    _CheckError,
    AttestationError,
    InvalidSignature,
    *X509_DECODE_ERRORS,
)


def _run(fn: Callable[[], _Step]) -> _Step:
    try:
        return fn()
    except _INPUT_ERRORS as exc:
        return _Step(error=str(exc) or type(exc).__name__)


def _present(value: _T | None, what: str) -> _T:
    # Check dependencies make these available; an explicit error (not assert) survives -O.
    if value is None:
        raise _CheckError(f"internal: {what} is not available")
    return value


def _raw_to_der_signature(raw: bytes) -> bytes:
    if len(raw) != 64:
        raise _CheckError(f"signature is {len(raw)} bytes, expected 64 (r || s)")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, raw_signature: bytes, data: bytes) -> bool:
    try:
        key.verify(_raw_to_der_signature(raw_signature), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _p256_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise _CheckError(f"'{describe(cert)}' does not hold a P-256 key")
    return key


class VerifiedCollateral:
    """Collateral whose signatures, chains and CRLs were checked once against a set of roots.

    Build it with ``prepare``; pass it to ``verify_quote`` in place of the ``Collateral``. It
    holds only time-independent results, so one object serves until the collateral is
    replaced; every verification still checks all validity windows against its own ``now``.
    It also remembers the outcome of checking each platform's PCK chain (bounded), which is
    what makes a repeated verification of the same platform cheap. Thread-safe.
    """

    def __init__(
        self,
        collateral: Collateral,
        roots: tuple[x509.Certificate, ...],
    ) -> None:
        """Internal: use ``prepare``."""
        self.collateral = collateral
        self.roots = roots
        self._root_ders = frozenset(certificate_sha256(r) for r in roots)
        self.root: x509.Certificate | None = None
        self.root_sha256: bytes | None = None
        self._root_crl: x509.CertificateRevocationList | None = None
        self._pck_crl: x509.CertificateRevocationList | None = None
        self._pck_crl_issuer: x509.Certificate | None = None
        self._steps: dict[str, _Step] = {}
        self._chain_memo: dict[str, _Step] = {}
        # Issuer signatures checked for this collateral set: the PCK Platform CA is checked
        # against the root for the PCK CRL and again in every PCK chain.
        self._links: set[tuple[bytes, bytes]] = set()
        self._pck_cache: OrderedDict[bytes, _PckResult] = OrderedDict()
        self._lock = threading.Lock()
        self._check_all()

    @classmethod
    def prepare(
        cls,
        collateral: Collateral,
        *,
        trusted_roots: Sequence[x509.Certificate] | None = None,
    ) -> VerifiedCollateral:
        """Check the collateral's signatures, chains and CRLs once, for the given roots.

        Never raises for bad collateral: failures are kept and reported by every
        ``verify_quote`` that uses this object.
        """
        if not isinstance(collateral, Collateral):
            raise TypeError(f"collateral must be a Collateral, not {type(collateral).__name__}")
        return cls(collateral, resolve_trusted_roots(trusted_roots))

    @property
    def issue_date(self) -> int:
        """The oldest TCB Info / QE Identity ``issueDate`` and PCK CRL ``thisUpdate``.

        A PCK CRL from before a revocation is as much a rollback as an old TCB Info, so the
        age a policy bounds counts it. (The root CA CRL is left out: Intel issues it once a
        year for its own CAs, so its age says nothing about how current the rest is.)
        """
        dates = [self.collateral.issue_date]
        if self._pck_crl is not None:
            dates.append(int(self._pck_crl.last_update_utc.timestamp()))
        return min(dates)

    @property
    def tcb_evaluation_data_number(self) -> int:
        """The lower of the TCB Info's and QE Identity's ``tcbEvaluationDataNumber``."""
        c = self.collateral
        return min(c.tcb_info.tcb_evaluation_data_number, c.qe_identity.tcb_evaluation_data_number)

    def trusts_exactly(self, roots: tuple[x509.Certificate, ...]) -> bool:
        """Whether this object was prepared for exactly these roots (compared by DER hash)."""
        return self._root_ders == frozenset(certificate_sha256(r) for r in roots)

    # --- Collateral checks (once) -----------------------------------------------------------

    def _check_all(self) -> None:
        c = self.collateral
        self._steps["root_ca"] = _run(self._root_ca)
        if self._steps["root_ca"].error is None:
            self._steps["root_ca_crl"] = _run(self._root_ca_crl)
        self._steps["collateral_type"] = _run(self._collateral_type)
        if self._steps.get("root_ca_crl", _Step("x")).error is None:
            self._steps["tcb_info_chain"] = _run(
                lambda: self._tcb_signer_chain(c.tcb_info_issuer_chain, "TCB Info issuer chain")
            )
            self._steps["qe_identity_chain"] = _run(
                lambda: self._tcb_signer_chain(
                    c.qe_identity_issuer_chain, "QE Identity issuer chain"
                )
            )
            self._steps["pck_crl"] = _run(self._pck_crl_step)
        if self._steps.get("tcb_info_chain", _Step("x")).error is None:
            self._steps["tcb_info_signature"] = _run(
                lambda: self._body_signature(
                    c.tcb_info_issuer_chain, c.tcb_info.raw, c.tcb_info_signature, "TCB Info"
                )
            )
        if self._steps.get("qe_identity_chain", _Step("x")).error is None:
            self._steps["qe_identity_signature"] = _run(
                lambda: self._body_signature(
                    c.qe_identity_issuer_chain,
                    c.qe_identity.raw,
                    c.qe_identity_signature,
                    "QE Identity",
                )
            )
        info, qe = c.tcb_info, c.qe_identity
        self._steps["tcb_info_validity"] = _Step(
            None,
            f"TCB Info valid {iso_time(info.issue_date)}..{iso_time(info.next_update)}",
            (Window("TCB Info", info.issue_date, info.next_update),),
        )
        self._steps["qe_identity_validity"] = _Step(
            None,
            f"QE Identity valid {iso_time(qe.issue_date)}..{iso_time(qe.next_update)}",
            (Window("QE Identity", qe.issue_date, qe.next_update),),
        )

    def _root_ca(self) -> _Step:
        chain = load_pem_chain(self.collateral.tcb_info_issuer_chain, "TCB Info issuer chain")
        root = select_root(chain, self.roots)
        window = verify_root(root)
        self.root = root
        self.root_sha256 = certificate_sha256(root)
        return _Step(None, f"'{describe(root)}' sha256={self.root_sha256.hex()}", (window,))

    def _root_ca_crl(self) -> _Step:
        root = _present(self.root, "root")
        crl = load_der_crl(self.collateral.root_ca_crl, "root CA CRL")
        window = verify_crl_signature(crl, root, "root CA CRL")
        reason = revoked_by(root, [(crl, "the root CA CRL")])
        if reason:
            raise _CheckError(reason)
        self._root_crl = crl
        return _Step(None, f"signed by the root, {len(crl)} entries", (window,))

    def _collateral_type(self) -> _Step:
        info, qe = self.collateral.tcb_info, self.collateral.qe_identity
        if info.id != TCB_INFO_ID_TDX:
            raise _CheckError(f"TCB Info id is {info.id!r}, not {TCB_INFO_ID_TDX!r}")
        if qe.id != QE_IDENTITY_ID_TD_QE:
            raise _CheckError(f"QE Identity id is {qe.id!r}, not {QE_IDENTITY_ID_TD_QE!r}")
        return _Step(None, f"TCB Info {info.id} v{info.version}, QE Identity {qe.id} v{qe.version}")

    def _issuer_chain(self, pem: str, what: str) -> _Step:
        # Intel signs TCB Info and QE Identity with the same chain: check each text once.
        if pem not in self._chain_memo:
            self._chain_memo[pem] = _run(lambda: self._issuer_chain_uncached(pem, what))
        step = self._chain_memo[pem]
        if step.error is not None:
            raise _CheckError(step.error)
        return step

    def _tcb_signer_chain(self, pem: str, what: str) -> _Step:
        # A valid chain is not enough: any key the root certified (a PCK key, say) would then
        # sign TCB levels. Only the TCB Signing leaf, directly under the root, speaks for them.
        # Checked first, so the failure names the role rather than whatever the chain trips on.
        certs = load_pem_chain(pem, what)
        root = _present(self.root, "root")
        root_hash = certificate_sha256(root)
        below_root = [c for c in certs if certificate_sha256(c) != root_hash]
        signer = certs[0]
        if len(below_root) != 1:
            raise _CheckError(
                f"{what}: the signer must be issued directly by the root, "
                f"but the chain has {len(below_root)} certificates below it"
            )
        if SGX_TCB_SIGNING_CN_PHRASE not in describe(signer):
            raise _CheckError(f"{what}: '{describe(signer)}' is not a TCB Signing certificate")
        extensions = signer.extensions
        try:
            bc = extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            bc = None
        if bc is not None and bc.ca:
            raise _CheckError(f"{what}: TCB signer '{describe(signer)}' is a CA")
        try:
            usage = extensions.get_extension_for_class(x509.KeyUsage).value
        except x509.ExtensionNotFound:
            usage = None
        if usage is None or not usage.digital_signature:
            raise _CheckError(
                f"{what}: TCB signer '{describe(signer)}' is not allowed digitalSignature"
            )
        return self._issuer_chain(pem, what)

    def _issuer_chain_uncached(self, pem: str, what: str) -> _Step:
        root_crl = _present(self._root_crl, "root CA CRL")
        path, windows = verify_chain(
            load_pem_chain(pem, what), _present(self.root, "root"), verified_links=self._links
        )
        for cert in path[:-1]:
            reason = revoked_by(cert, [(root_crl, "the root CA CRL")])
            if reason:
                raise _CheckError(reason)
        return _Step(None, " <- ".join(describe(c) for c in path), tuple(windows))

    def _body_signature(self, chain_pem: str, text: str, signature: bytes, what: str) -> _Step:
        signer = load_pem_chain(chain_pem, f"{what} issuer chain")[0]
        if not _ecdsa_ok(_p256_key(signer), signature, text.encode()):
            raise _CheckError(f"{what} signature does not verify with '{describe(signer)}'")
        return _Step(None, f"signed by '{describe(signer)}'")

    def _pck_crl_step(self) -> _Step:
        step = self._issuer_chain(self.collateral.pck_crl_issuer_chain, "PCK CRL issuer chain")
        issuer = load_pem_chain(self.collateral.pck_crl_issuer_chain, "PCK CRL issuer chain")[0]
        crl = load_der_crl(self.collateral.pck_crl, "PCK CRL")
        window = verify_crl_signature(crl, issuer, "PCK CRL")
        self._pck_crl, self._pck_crl_issuer = crl, issuer
        return _Step(
            None, f"signed by '{describe(issuer)}', {len(crl)} entries", (*step.windows, window)
        )

    # --- PCK chain checks (once per platform) -----------------------------------------------

    def pck_result(self, pck_chain_pem: bytes) -> _PckResult:
        with self._lock:
            cached = self._pck_cache.get(pck_chain_pem)
            if cached is not None:
                self._pck_cache.move_to_end(pck_chain_pem)
                return cached
        result = self._check_pck(pck_chain_pem)
        with self._lock:
            self._pck_cache[pck_chain_pem] = result
            while len(self._pck_cache) > _PCK_CACHE_SIZE:
                self._pck_cache.popitem(last=False)
        return result

    def _check_pck(self, pem: bytes) -> _PckResult:
        holder: dict[str, object] = {}

        def chain() -> _Step:
            certs = split_pem_chain(pem)
            path, windows = verify_chain(
                certs, _present(self.root, "root"), verified_links=self._links
            )
            leaf = path[0]
            if SGX_PCK_CN_PHRASE not in describe(leaf):
                raise _CheckError(f"leaf '{describe(leaf)}' is not an SGX PCK certificate")
            holder["path"] = path
            holder["key"] = _p256_key(leaf)
            holder["ext"] = parse_pck_extensions(leaf)
            return _Step(None, " <- ".join(describe(c) for c in path), tuple(windows))

        chain_step = _run(chain)
        revocation: _Step | None = None
        if chain_step.error is None and self._root_crl is not None and self._pck_crl is not None:
            path = holder["path"]
            if isinstance(path, list):
                revocation = _run(lambda: self._pck_revocation(path))
        key = holder.get("key")
        ext = holder.get("ext")
        return _PckResult(
            chain_step,
            revocation,
            key if isinstance(key, ec.EllipticCurvePublicKey) else None,
            ext if isinstance(ext, PckExtensions) else None,
        )

    def _pck_revocation(self, path: list[x509.Certificate]) -> _Step:
        root_crl = _present(self._root_crl, "root CA CRL")
        pck_crl = _present(self._pck_crl, "PCK CRL")
        pck_crl_issuer = _present(self._pck_crl_issuer, "PCK CRL issuer")
        issuer = path[1]
        # The PCK CRL was checked against the collateral's issuer chain; it only speaks for
        # this leaf if that is the very CA that issued it (a Processor-CA leaf needs the
        # Processor CA's CRL, not the Platform CA's).
        if certificate_sha256(issuer) != certificate_sha256(pck_crl_issuer):
            raise _CheckError(
                f"the PCK CRL is issued by '{describe(pck_crl_issuer)}', but the PCK "
                f"certificate by '{describe(issuer)}'"
            )
        crls = [(pck_crl, "the PCK CRL"), (root_crl, "the root CA CRL")]
        for cert in path[:-1]:
            reason = revoked_by(cert, crls)
            if reason:
                raise _CheckError(reason)
        return _Step(None, f"{len(path) - 1} certificates checked against both CRLs")


# --- Per-quote verification ---------------------------------------------------------------------


class _Run:
    """One verification: records checks in order, applying dependencies and time windows."""

    def __init__(self, report: VerificationReport, now: int) -> None:
        self.report = report
        self.now = now
        self.passed: set[str] = set()

    def _blocked(self, name: str) -> str | None:
        missing = [d for d in _DEPENDS.get(name, ()) if d not in self.passed]
        return f"skipped: needs {', '.join(missing)}" if missing else None

    def step(self, name: str, step: _Step | None) -> bool:
        """Record a precomputed step (None = could not run), checking its windows at now."""
        blocked = self._blocked(name)
        if blocked or step is None:
            self.report.add(name, CheckStatus.SKIP, blocked or "skipped: prerequisite unusable")
            return False
        if step.error is not None:
            self.report.add(name, CheckStatus.FAIL, step.error)
            return False
        expired = first_invalid(step.windows, self.now)
        if expired:
            self.report.add(name, CheckStatus.FAIL, expired, outside_validity=True)
            return False
        self.report.add(name, CheckStatus.PASS, step.detail)
        self.passed.add(name)
        for window in step.windows:
            last = window.not_after - 1 if window.end_exclusive else window.not_after
            if self.report.valid_until is None or last < self.report.valid_until:
                self.report.valid_until = last
        return True

    def check(self, name: str, fn: Callable[[], str]) -> bool:
        """Run ``fn`` now (it returns the PASS detail or raises) unless blocked."""
        blocked = self._blocked(name)
        if blocked:
            self.report.add(name, CheckStatus.SKIP, blocked)
            return False
        try:
            detail = fn()
        except _INPUT_ERRORS as exc:
            self.report.add(name, CheckStatus.FAIL, str(exc) or type(exc).__name__)
            return False
        self.report.add(name, CheckStatus.PASS, detail)
        self.passed.add(name)
        return True


def _resolve_collateral(
    collateral: Collateral | VerifiedCollateral, roots: tuple[x509.Certificate, ...]
) -> VerifiedCollateral:
    if isinstance(collateral, VerifiedCollateral):
        if not collateral.trusts_exactly(roots):
            raise ValueError(
                "the VerifiedCollateral was prepared for other trusted roots than these"
            )
        return collateral
    if isinstance(collateral, Collateral):
        return VerifiedCollateral(collateral, roots)
    raise TypeError(f"collateral must be a Collateral, not {type(collateral).__name__}")


def _check_now(now: object) -> None:
    if isinstance(now, bool) or not isinstance(now, int):
        raise TypeError(f"now must be an int (UNIX seconds), not {type(now).__name__}")


def verify_collateral(
    collateral: Collateral | VerifiedCollateral,
    *,
    now: int,
    trusted_roots: Sequence[x509.Certificate] | None = None,
) -> VerificationReport:
    """Run only the collateral checks (``COLLATERAL_CHECK_NAMES``) at time ``now``.

    These are exactly the checks ``verify_quote`` runs on the collateral, by the same code;
    a collateral cache uses this to re-verify an entry on every use without a quote at hand.
    The report's ``ok`` says whether all of them passed.
    """
    _check_now(now)
    verified = _resolve_collateral(collateral, resolve_trusted_roots(trusted_roots))
    report = VerificationReport(
        verified_at=now,
        collateral_issue_date=verified.issue_date,
        tcb_evaluation_data_number=verified.tcb_evaluation_data_number,
    )
    run = _Run(report, now)
    for name in COLLATERAL_CHECK_NAMES:
        if run.step(name, verified._steps.get(name)) and name == "root_ca":
            report.trusted_root_sha256 = verified.root_sha256
    return report


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral | VerifiedCollateral,
    *,
    now: int,
    trusted_roots: Sequence[x509.Certificate] | None = None,
    allow_mr_service_td: bool = False,
) -> VerificationReport:
    """Verify a TDX quote against Intel collateral at time ``now`` (UNIX seconds).

    ``quote`` is the raw quote or an already parsed ``Quote``. ``collateral`` is a
    ``Collateral`` or, for the fast path, a ``VerifiedCollateral`` prepared for the same
    ``trusted_roots`` (Intel's root when None; any other root only when passed here).
    ``allow_mr_service_td`` accepts a non-zero MRSERVICETD (TDX 1.5 service TD binding).

    Returns a report with one entry per check in ``CHECK_NAMES`` order; never raises for bad
    input. Raises TypeError/ValueError for wrong argument types or an empty root list.
    """
    _check_now(now)
    if not isinstance(quote, (bytes, bytearray, memoryview, Quote)):
        raise TypeError(f"quote must be bytes or a Quote, not {type(quote).__name__}")
    verified = _resolve_collateral(collateral, resolve_trusted_roots(trusted_roots))

    report = VerificationReport(
        verified_at=now,
        collateral_issue_date=verified.issue_date,
        tcb_evaluation_data_number=verified.tcb_evaluation_data_number,
    )
    run = _Run(report, now)
    steps = verified._steps

    # quote_format
    parsed: Quote | None = quote if isinstance(quote, Quote) else None

    def parse() -> str:
        nonlocal parsed
        if parsed is None and not isinstance(quote, Quote):
            parsed = parse_quote(bytes(quote))
        done = _need(parsed)
        return f"quote v{done.version}, {done.body_type.name} body"

    run.check("quote_format", parse)
    report.quote = parsed

    if run.step("root_ca", steps.get("root_ca")):
        report.trusted_root_sha256 = verified.root_sha256
    run.step("root_ca_crl", steps.get("root_ca_crl"))
    q = parsed
    run.check("quote_header", lambda: _check_header(_need(q)))
    run.step("collateral_type", steps.get("collateral_type"))
    for name in (
        "tcb_info_chain",
        "tcb_info_signature",
        "tcb_info_validity",
        "qe_identity_chain",
        "qe_identity_signature",
        "qe_identity_validity",
        "pck_crl",
    ):
        run.step(name, steps.get(name))

    pck: _PckResult | None = None
    if q is not None and "root_ca" in run.passed:
        pck = verified.pck_result(q.signature_data.certification.pck_chain_pem)
    run.step("pck_chain", pck.chain_step if pck else None)
    run.step("pck_revocation", pck.revocation_step if pck else None)
    if pck is not None and pck.extensions is not None and "pck_chain" in run.passed:
        report.fmspc = pck.extensions.fmspc

    run.check("qe_report_signature", lambda: _check_qe_report_signature(_need(q), pck))
    run.check("qe_report_data", lambda: _check_qe_report_data(_need(q)))
    qe_level: list[ModuleTcbLevel] = []
    run.check("qe_identity", lambda: _check_qe_identity(_need(q), verified.collateral, qe_level))
    if qe_level:
        report.qe_tcb_status = qe_level[0].status
    run.check("quote_signature", lambda: _check_quote_signature(_need(q)))
    run.check("fmspc_match", lambda: _check_fmspc(pck, verified.collateral))
    platform_level: list[TcbLevel] = []
    run.check(
        "platform_tcb",
        lambda: _check_platform_tcb(_need(q), pck, verified.collateral, platform_level),
    )
    if platform_level:
        report.platform_tcb_status = platform_level[0].status
    module_level: list[ModuleTcbLevel | None] = []
    run.check(
        "tdx_module_identity",
        lambda: _check_tdx_module(_need(q), verified.collateral, module_level),
    )
    if module_level:
        level = module_level[0]
        report.tdx_module_tcb_status = level.status if level else TcbStatus.UP_TO_DATE
    run.check("td_attributes", lambda: _check_td_attributes(_need(q)))
    run.check("mr_service_td", lambda: _check_mr_service_td(_need(q), allow_mr_service_td))

    if report.platform_tcb_status and report.tdx_module_tcb_status and report.qe_tcb_status:
        report.tcb_status = converge(
            converge(report.platform_tcb_status, report.tdx_module_tcb_status),
            report.qe_tcb_status,
        )
        report.advisory_ids = unite_advisories(
            platform_level[0].advisory_ids,
            module_level[0].advisory_ids if module_level[0] else (),
            qe_level[0].advisory_ids,
        )
    return report


def warm_up() -> None:
    """Pay this process's one-time verification costs now rather than in the first handshake.

    Loads and checks the pinned Intel root, and verifies its self-signature: the first ECDSA
    verification in a process is where OpenSSL sets up its EC code, several milliseconds that
    every later verification is spared. Verifies no evidence and caches no verdict; calling
    it is never required. Raises what loading the root raises (a tampered root file).
    """
    verify_root(intel_sgx_root_ca())


def _need(quote: Quote | None) -> Quote:
    # Dependencies guarantee a parsed quote; this keeps the type checker and a bug honest.
    if quote is None:
        raise _CheckError("no parsed quote")
    return quote


def _check_header(quote: Quote) -> str:
    h = quote.header
    if h.version not in SUPPORTED_QUOTE_VERSIONS:
        raise _CheckError(f"quote version {h.version} is not supported")
    if h.attestation_key_type != AttestationKeyType.ECDSA_P256:
        raise _CheckError(f"attestation key type {h.attestation_key_type} is not ECDSA P-256")
    if h.tee_type != TeeType.TDX:
        raise _CheckError(f"TEE type {h.tee_type:#x} is not TDX")
    if not hmac.compare_digest(h.qe_vendor_id, INTEL_QE_VENDOR_ID):
        raise _CheckError(f"QE vendor ID {h.qe_vendor_id.hex()} is not Intel's")
    return f"v{h.version}, ECDSA P-256, TDX, Intel QE"


def _check_qe_report_signature(quote: Quote, pck: _PckResult | None) -> str:
    if pck is None or pck.leaf_key is None:
        raise _CheckError("no usable PCK key")
    cert = quote.signature_data.certification
    if not _ecdsa_ok(pck.leaf_key, cert.qe_report_signature, cert.qe_report.raw):
        raise _CheckError("QE report signature does not verify with the PCK certificate's key")
    return "QE report signed by the PCK key"


def _check_qe_report_data(quote: Quote) -> str:
    sig = quote.signature_data
    expected = hashlib.sha256(sig.attestation_key + sig.certification.qe_auth_data).digest()
    # Intel's QE puts the hash in the first 32 bytes; Intel's QVL compares exactly those.
    if not hmac.compare_digest(sig.certification.qe_report.report_data[:32], expected):
        raise _CheckError(
            "QE report data is not SHA-256(attestation key || QE authentication data)"
        )
    return "QE report binds the attestation key and QE authentication data"


def _check_qe_identity(quote: Quote, collateral: Collateral, out: list[ModuleTcbLevel]) -> str:
    identity = collateral.qe_identity
    report = quote.signature_data.certification.qe_report
    if report.misc_select & identity.miscselect_mask != identity.miscselect:
        raise _CheckError("QE MISCSELECT does not match the QE Identity under its mask")
    masked = bytes(a & m for a, m in zip(report.attributes, identity.attributes_mask, strict=True))
    if masked != identity.attributes:
        raise _CheckError("QE ATTRIBUTES do not match the QE Identity under its mask")
    if not hmac.compare_digest(report.mr_signer, identity.mrsigner):
        raise _CheckError(f"QE MRSIGNER {report.mr_signer.hex()} is not the QE Identity's")
    if report.isv_prod_id != identity.isv_prod_id:
        raise _CheckError(
            f"QE ISVPRODID {report.isv_prod_id} is not the QE Identity's {identity.isv_prod_id}"
        )
    level = match_isv_level(identity.tcb_levels, report.isv_svn)
    if level is None:
        raise _CheckError(f"QE ISVSVN {report.isv_svn} is below every QE Identity TCB level")
    out.append(level)
    if level.status is TcbStatus.REVOKED:
        raise _CheckError(f"QE TCB level for ISVSVN {report.isv_svn} is Revoked")
    return f"TD QE matches; ISVSVN {report.isv_svn} -> {level.status.value}"


def _check_quote_signature(quote: Quote) -> str:
    sig = quote.signature_data
    try:
        key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + sig.attestation_key
        )
    except ValueError:
        raise _CheckError("attestation key is not a point on P-256") from None
    if not _ecdsa_ok(key, sig.signature, quote.signed_region):
        raise _CheckError("quote signature does not verify with the attestation key")
    return "header and TD report signed by the attestation key"


def _check_fmspc(pck: _PckResult | None, collateral: Collateral) -> str:
    if pck is None or pck.extensions is None:
        raise _CheckError("no PCK extensions")
    ext, info = pck.extensions, collateral.tcb_info
    if ext.fmspc != info.fmspc:
        raise _CheckError(f"PCK FMSPC {ext.fmspc.hex()} is not the TCB Info's {info.fmspc.hex()}")
    if ext.pce_id != info.pce_id:
        raise _CheckError(f"PCK PCEID {ext.pce_id.hex()} is not the TCB Info's {info.pce_id.hex()}")
    return f"FMSPC {ext.fmspc.hex().upper()}, PCEID {ext.pce_id.hex()}"


def _check_platform_tcb(
    quote: Quote, pck: _PckResult | None, collateral: Collateral, out: list[TcbLevel]
) -> str:
    if pck is None or pck.extensions is None:
        raise _CheckError("no PCK extensions")
    ext = pck.extensions
    sgx, tdx = match_platform_levels(
        collateral.tcb_info.tcb_levels,
        cpu_svn=ext.tcb_components,
        pce_svn=ext.pce_svn,
        tee_tcb_svn=quote.td_report.tee_tcb_svn,
    )
    if sgx is None:
        raise _CheckError("the PCK's SGX TCB components and PCESVN are below every TCB level")
    if tdx is None:
        raise _CheckError("TEE_TCB_SVN is below the TDX components of every applicable TCB level")
    out.append(tdx)
    if tdx.status is TcbStatus.REVOKED:
        raise _CheckError("the platform's TCB level is Revoked")
    return f"{tdx.status.value} (TCB date {tdx.tcb_date})"


def _check_tdx_module(
    quote: Quote, collateral: Collateral, out: list[ModuleTcbLevel | None]
) -> str:
    report, info = quote.td_report, collateral.tcb_info
    version = report.tee_tcb_svn[TEE_TCB_SVN_MODULE_VERSION]
    svn = report.tee_tcb_svn[TEE_TCB_SVN_MODULE_SVN]
    identity = find_module_identity(info, version) if version > 0 else None
    if version > 0 and identity is None:
        raise _CheckError(f"TCB Info has no TDX module identity {module_identity_id(version)}")
    if identity is not None:
        mrsigner, attributes, mask = (
            identity.mrsigner,
            identity.attributes,
            identity.attributes_mask,
        )
        name = identity.id
    elif info.tdx_module is not None:
        m = info.tdx_module
        mrsigner, attributes, mask = m.mrsigner, m.attributes, m.attributes_mask
        name = "tdxModule"
    else:
        raise _CheckError("TCB Info has no tdxModule")
    if not hmac.compare_digest(report.mr_signer_seam, mrsigner):
        raise _CheckError(f"MRSIGNERSEAM is not the signer of {name}")
    masked = bytes(a & m for a, m in zip(report.seam_attributes, mask, strict=True))
    expected = bytes(a & m for a, m in zip(attributes, mask, strict=True))
    if masked != expected:
        raise _CheckError(f"SEAMATTRIBUTES do not match {name} under its mask")
    # Intel's QVL additionally requires SEAMATTRIBUTES to be all zero (4.1.2.4.11.2).
    if any(report.seam_attributes):
        raise _CheckError(f"SEAMATTRIBUTES {report.seam_attributes.hex()} are not zero")
    if identity is None:
        # A module without a major version (TDX 1.0 style) is judged by the platform level.
        out.append(None)
        return "TDX module matches tdxModule; its SVN is judged by the platform TCB level"
    level = match_isv_level(identity.tcb_levels, svn)
    if level is None:
        raise _CheckError(f"TDX module SVN {svn} is below every {name} TCB level")
    out.append(level)
    if level.status is TcbStatus.REVOKED:
        raise _CheckError(f"{name} TCB level for SVN {svn} is Revoked")
    return f"{name} matches; SVN {svn} -> {level.status.value}"


def _check_td_attributes(quote: Quote) -> str:
    attrs = quote.td_report.td_attributes_int
    if attrs & TD_ATTR_DEBUG:
        raise _CheckError("the TD is debuggable (TDATTRIBUTES.DEBUG is set)")
    if not attrs & TD_ATTR_SEPT_VE_DISABLE:
        raise _CheckError("TDATTRIBUTES.SEPT_VE_DISABLE is not set")
    if attrs & TD_ATTR_FORBIDDEN:
        raise _CheckError(
            f"TDATTRIBUTES has reserved or MIGRATABLE bits set: {attrs & TD_ATTR_FORBIDDEN:#018x}"
        )
    return f"TDATTRIBUTES {quote.td_report.td_attributes.hex()}: DEBUG off, SEPT_VE_DISABLE on"


def _check_mr_service_td(quote: Quote, allowed: bool) -> str:
    value = quote.td_report.mr_service_td
    if value is None:
        return "TDX 1.0 report: no MRSERVICETD field"
    if not any(value):
        return "MRSERVICETD is zero"
    if allowed:
        return f"MRSERVICETD {value.hex()} allowed by the caller"
    raise _CheckError(
        f"MRSERVICETD is {value.hex()}, not zero (pass allow_mr_service_td to accept)"
    )
