"""X.509 certificate chains and CRLs for DCAP, split into signature work and time checks.

Every DCAP chain is short (leaf, at most one intermediate, Intel's root) and every CRL is
issued directly by a certificate in it, so the path is validated here by hand on top of
``cryptography``: each link's signature and issuer name, CA basic constraints, path length
and key usage of every issuer, and that the path ends in a root the caller trusts. Generic
RFC 5280 path building (``cryptography.x509.verification``) is not used because it imposes
web-PKI rules (subject alternative names, extended key usage) that Intel's PCK certificates
do not follow.

Time is kept apart from signatures on purpose: ``verify_chain`` and ``verify_crl_signature``
do the expensive, time-independent work once and return ``Window``s; ``Window.contains(now)``
is the cheap part done on every verification.

Parsing is cached process-wide by content, never by name: a certificate or CRL is the same
object for identical bytes (``split_pem_chain`` keys by the PEM bytes, ``load_der_crl`` by
the DER), and what is derived from one parsed certificate or CRL alone (decodability,
window, fingerprint, PCK extension; a CRL's issuer name, entry serials and signed bytes) is
kept with that object (``attestation._memo``). Signatures, issuers, revocation and time are
never cached here; a ``VerifiedCollateral`` keeps those per collateral set.
``clear_parse_caches`` empties every such cache (benchmarks measure a first sight with it).

Deliberately not here: which roots are trusted (``attestation.trust``) and the SGX
extensions of PCK certificates (``attestation.pck``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from attestation._memo import IdentityMemo, identity_memo
from attestation.errors import CertificateError
from attestation.pck import clear_pck_caches, split_pem_chain
from attestation.trust import certificate_sha256

# What ``cryptography`` may raise while decoding (often lazily) a malformed certificate or CRL.
# Only ValueError is documented for loading; a bad version field or a duplicated extension
# surfaces as these other, non-ValueError exceptions and must not escape as a crash.
X509_DECODE_ERRORS: tuple[type[Exception], ...] = (
    ValueError,
    UnsupportedAlgorithm,  # e.g. a damaged public key algorithm or curve parameter
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)

_DECODE_OR_TYPE_ERRORS: tuple[type[Exception], ...] = (*X509_DECODE_ERRORS, TypeError)

# Upper bound on certificates in one PEM chain: DCAP chains have 2 or 3. A larger bundle is
# malformed (and would let a sender make us do unbounded signature work).
MAX_CHAIN_LENGTH = 8


class Window(NamedTuple):
    """A validity interval [not_before, not_after] in UNIX seconds, named for error details."""

    what: str
    not_before: int
    not_after: int
    # A CRL is stale from the second of its nextUpdate on (webpki, hence dcap-qvl, reads it
    # so); certificate notAfter and collateral nextUpdate include their last second.
    end_exclusive: bool = False

    def contains(self, now: int) -> bool:
        if self.end_exclusive:
            return self.not_before <= now < self.not_after
        return self.not_before <= now <= self.not_after

    def describe_failure(self, now: int) -> str:
        if now < self.not_before:
            return (
                f"{self.what} is not yet valid at {iso_time(now)} "
                f"(valid from {iso_time(self.not_before)})"
            )
        bound = "before" if self.end_exclusive else "until"
        return (
            f"{self.what} expired before {iso_time(now)} (valid {bound} {iso_time(self.not_after)})"
        )


def iso_time(seconds: int) -> str:
    """UNIX seconds as ISO 8601 UTC (``2025-07-19T10:00:34Z``), the form error details use."""
    try:
        return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):  # beyond datetime's range: say so plainly
        return f"UNIX time {seconds}"


def first_invalid(windows: Sequence[Window], now: int) -> str | None:
    """The reason the first window that does not contain ``now`` fails, or None if all do."""
    for window in windows:
        if not window.contains(now):
            return window.describe_failure(now)
    return None


@identity_memo(maxsize=256)
def describe(cert: x509.Certificate) -> str:
    """A short human name for a certificate in error details (its subject CN, else subject)."""
    cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if cns:
        value = cns[0].value
        return value if isinstance(value, str) else value.decode(errors="replace")
    return cert.subject.rfc4514_string()


@identity_memo(maxsize=256)
def certificate_window(cert: x509.Certificate) -> Window:
    return Window(
        f"certificate '{describe(cert)}'",
        int(cert.not_valid_before_utc.timestamp()),
        int(cert.not_valid_after_utc.timestamp()),
    )


def crl_window(crl: x509.CertificateRevocationList, what: str) -> Window:
    """[thisUpdate, nextUpdate). A CRL without nextUpdate is refused: it could never go stale."""
    next_update = crl.next_update_utc
    if next_update is None:
        raise CertificateError(f"{what} has no nextUpdate")
    return Window(
        what,
        int(crl.last_update_utc.timestamp()),
        int(next_update.timestamp()),
        end_exclusive=True,
    )


def check_decodable(cert: x509.Certificate, what: str) -> None:
    """Decode every field this module reads, once, so a malformed one is a CertificateError.

    ``cryptography`` decodes names, extensions and keys lazily and, for some malformed
    encodings, raises TypeError or UnsupportedAlgorithm on first access instead of failing at
    load; touching them here keeps that out of the checks that use them.
    """
    problem = _decoding_problem(cert)
    if problem is not None:
        raise CertificateError(f"{what}: a certificate is malformed: {problem}")


@identity_memo(maxsize=256)
def _decoding_problem(cert: x509.Certificate) -> str | None:
    # Decoding is a property of the bytes alone: the answer for identical DER never changes.
    try:
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.extensions)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
        _ = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    except _DECODE_OR_TYPE_ERRORS as exc:
        return str(exc) or type(exc).__name__
    return None


def load_pem_chain(pem: str | bytes, what: str) -> list[x509.Certificate]:
    """Parse a PEM bundle (leaf first). CertificateError if empty, malformed or oversized."""
    data = pem.encode() if isinstance(pem, str) else pem
    if data.count(b"-----BEGIN CERTIFICATE-----") > MAX_CHAIN_LENGTH:
        raise CertificateError(f"{what} has more than {MAX_CHAIN_LENGTH} certificates")
    # One strict PEM reader for quotes and collateral alike (no stray text, positive serials).
    try:
        certs = split_pem_chain(data)
    except CertificateError as exc:
        raise CertificateError(f"{what}: {exc}") from None
    for cert in certs:
        check_decodable(cert, what)
    return certs


def load_der_crl(der: bytes, what: str) -> x509.CertificateRevocationList:
    """Parse a DER CRL and decode every field read later; CertificateError if malformed."""
    try:
        return _load_der_crl(bytes(der))
    except _MalformedCrlError as exc:
        raise CertificateError(f"{what} {exc}") from None


class _MalformedCrlError(Exception):
    """Internal: the message completes "<what> ..." in the CertificateError."""


class _CrlFacts(NamedTuple):
    """What the checks read from one parsed CRL, decoded once per CRL object."""

    issuer: x509.Name  # ``crl.issuer`` builds a new Name on every access
    serials: frozenset[int]  # the serial numbers of its entries
    # (tbsCertList, signature) when the CRL has the DCAP shape: ecdsa-with-SHA256 as both the
    # signed and the outer algorithm, and a tbsCertList identical to the one cryptography
    # re-encodes for ``is_signature_valid``. None sends the check through the library call.
    signed: tuple[bytes, bytes] | None


def _crl_facts_of(crl: x509.CertificateRevocationList) -> _CrlFacts:
    # CRL objects that did not come through load_der_crl (its DER is not at hand).
    return _CrlFacts(crl.issuer, frozenset(entry.serial_number for entry in crl), None)


# Larger than the parse cache, so a CRL it holds keeps its facts.
_crl_facts = IdentityMemo(_crl_facts_of, maxsize=64)

# [RFC 5758] 3.2: AlgorithmIdentifier { ecdsa-with-SHA256 (1.2.840.10045.4.3.2) }, parameters
# absent, in DER; Intel signs every DCAP CRL and certificate with it.
_ECDSA_SHA256_ALGORITHM = bytes.fromhex("300a06082a8648ce3d040302")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_DER_SEQUENCE, _DER_INTEGER, _DER_BIT_STRING = 0x30, 0x02, 0x03


def _der_children(data: bytes) -> list[tuple[int, int, bytes]] | None:
    """(tag, header length, whole TLV) of the elements that exactly fill ``data``; None if not.

    Deliberately lax (no minimal-length rule): its one caller compares what it finds with
    what cryptography's strict parser re-encodes, and takes no fast path on any difference.
    """
    out: list[tuple[int, int, bytes]] = []
    pos, end = 0, len(data)
    while pos < end:
        if pos + 2 > end:
            return None
        first = data[pos + 1]
        if first < 0x80:
            length, head = first, 2
        else:
            count = first & 0x7F
            if not 0 < count <= 4 or pos + 2 + count > end:
                return None
            length, head = int.from_bytes(data[pos + 2 : pos + 2 + count], "big"), 2 + count
        stop = pos + head + length
        if stop > end:
            return None
        out.append((data[pos], head, data[pos:stop]))
        pos = stop
    return out


def _crl_signed_part(crl: x509.CertificateRevocationList, der: bytes) -> tuple[bytes, bytes] | None:
    """The bytes ``crl.is_signature_valid`` verifies, cut from ``der``; None if not the DCAP shape.

    CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue } and
    tbsCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature AlgorithmIdentifier, ... }
    (RFC 5280 5.1). The library refuses a CRL whose two algorithms differ; so does this.
    """
    top = _der_children(der)
    if top is None or len(top) != 1 or top[0][0] != _DER_SEQUENCE:
        return None
    parts = _der_children(top[0][2][top[0][1] :])
    if parts is None or [tag for tag, _, _ in parts] != [
        _DER_SEQUENCE,
        _DER_SEQUENCE,
        _DER_BIT_STRING,
    ]:
        return None
    tbs, outer_algorithm = parts[0][2], parts[1][2]
    fields = _der_children(tbs[parts[0][1] :])
    if fields and fields[0][0] == _DER_INTEGER:
        fields = fields[1:]
    if not fields or fields[0][2] != _ECDSA_SHA256_ALGORITHM:
        return None
    if outer_algorithm != _ECDSA_SHA256_ALGORITHM or tbs != crl.tbs_certlist_bytes:
        return None
    return tbs, crl.signature


# Keyed by the DER itself: a collateral refresh that keeps a CRL reuses its parse. Failures
# raise, and lru_cache never stores them.
@lru_cache(maxsize=32)
def _load_der_crl(der: bytes) -> x509.CertificateRevocationList:
    try:
        crl = x509.load_der_x509_crl(der)
    except X509_DECODE_ERRORS as exc:
        raise _MalformedCrlError(f"is not a valid DER CRL: {exc}") from None
    try:
        issuer = crl.issuer
        _ = (crl.last_update_utc, crl.next_update_utc)
        serials = frozenset(entry.serial_number for entry in crl)
        signed = _crl_signed_part(crl, der)
    except _DECODE_OR_TYPE_ERRORS as exc:
        raise _MalformedCrlError(f"is malformed: {exc}") from None
    _crl_facts.remember(crl, _CrlFacts(issuer, serials, signed))
    return crl


def clear_parse_caches() -> None:
    """Forget every parsed certificate, CRL and PCK extension (see the module docstring)."""
    clear_pck_caches()
    for cached in (
        _load_der_crl,
        _crl_facts,
        _decoding_problem,
        certificate_window,
        certificate_sha256,
        describe,
    ):
        cached.cache_clear()


def _check_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    try:
        cert.verify_directly_issued_by(issuer)
    except InvalidSignature:
        raise CertificateError(
            f"signature of '{describe(cert)}' does not verify with the key of '{describe(issuer)}'"
        ) from None
    except _DECODE_OR_TYPE_ERRORS as exc:
        raise CertificateError(
            f"'{describe(cert)}' is not issued by '{describe(issuer)}': {exc}"
        ) from None


def _check_ca(issuer: x509.Certificate, cas_below: int) -> None:
    """``issuer`` signs ``cas_below`` CA certificates below it (0 when it signs the leaf)."""
    try:
        extensions = issuer.extensions
    except X509_DECODE_ERRORS as exc:
        raise CertificateError(f"extensions of '{describe(issuer)}' are malformed: {exc}") from None
    try:
        bc = extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise CertificateError(f"issuer '{describe(issuer)}' has no basicConstraints") from None
    if not bc.ca:
        raise CertificateError(f"issuer '{describe(issuer)}' is not a CA")
    if bc.path_length is not None and bc.path_length < cas_below:
        raise CertificateError(f"path length constraint of '{describe(issuer)}' is exceeded")
    try:
        ku = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not ku.key_cert_sign:
        raise CertificateError(f"issuer '{describe(issuer)}' may not sign certificates")


def _same_cert(a: x509.Certificate, b: x509.Certificate) -> bool:
    return certificate_sha256(a) == certificate_sha256(b)


def select_root(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate]
) -> x509.Certificate:
    """The trusted root ``chain`` ends in: its last certificate, or the issuer of it.

    A self-issued last certificate must be byte-identical to a trusted root; a look-alike
    with Intel's name but another key is exactly the attack this check stops.
    """
    for cert in (*chain, *roots):
        check_decodable(cert, "certificate chain or trusted root")
    last = chain[-1]
    if last.subject == last.issuer:
        for root in roots:
            if _same_cert(last, root):
                return root
        raise CertificateError(f"root certificate '{describe(last)}' is not a trusted root")
    for root in roots:
        if root.subject == last.issuer:
            return root
    raise CertificateError(f"'{describe(last)}' is not issued by a trusted root")


def verify_root(root: x509.Certificate) -> Window:
    """A trusted root must still be a well-formed self-signed CA; returns its window."""
    _check_issued_by(root, root)
    _check_ca(root, 0)
    return certificate_window(root)


def verify_chain(
    chain: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    verified_links: set[tuple[bytes, bytes]] | None = None,
) -> tuple[list[x509.Certificate], list[Window]]:
    """Check every link of ``chain`` (leaf first) up to ``root``; time is not looked at.

    Returns the full path (leaf ... root) and the validity window of every certificate in it,
    for ``first_invalid(windows, now)``. CertificateError says which link failed.

    ``verified_links`` lets one caller skip a signature it already checked: it holds
    (certificate SHA-256, issuer SHA-256) pairs whose signature verified, and gains the links
    verified here. A signature is a function of those two DERs alone; every other check of
    the link (CA constraints, key usage, path length) still runs.
    """
    if not chain:
        raise CertificateError("empty certificate chain")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise CertificateError(f"chain has more than {MAX_CHAIN_LENGTH} certificates")
    for cert in (*chain, root):
        check_decodable(cert, "certificate chain")
    path = list(chain)
    if _same_cert(path[-1], root):
        pass
    elif path[-1].subject == path[-1].issuer:
        raise CertificateError(f"chain ends in untrusted root '{describe(path[-1])}'")
    else:
        path.append(root)
    if len(path) < 2:
        raise CertificateError("chain holds only the root, no certificate issued by it")
    for i in range(len(path) - 1):
        link = (certificate_sha256(path[i]), certificate_sha256(path[i + 1]))
        if verified_links is None or link not in verified_links:
            _check_issued_by(path[i], path[i + 1])
            if verified_links is not None:
                verified_links.add(link)
        _check_ca(path[i + 1], i)  # path[i+1] has i CA certificates between it and the leaf
    return path, [certificate_window(c) for c in path]


def verify_crl_signature(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, what: str
) -> Window:
    """The CRL names ``issuer`` and carries its valid signature; returns the CRL's window."""
    try:
        facts = _crl_facts(crl)
    except _DECODE_OR_TYPE_ERRORS as exc:
        raise CertificateError(f"{what} is malformed: {exc}") from None
    if facts.issuer != issuer.subject:
        raise CertificateError(
            f"{what} is issued by '{facts.issuer.rfc4514_string()}', not by '{describe(issuer)}'"
        )
    try:
        key = issuer.public_key()
        if facts.signed is not None and isinstance(key, ec.EllipticCurvePublicKey):
            # The same check as is_signature_valid on the same bytes, without re-encoding the
            # whole CRL on every call (tests/attestation/test_certs.py compares the two).
            tbs, signature = facts.signed
            try:
                key.verify(signature, tbs, _ECDSA_SHA256)
                valid = True
            except InvalidSignature:
                valid = False
        else:
            valid = crl.is_signature_valid(key)  # type: ignore[arg-type]
    except _DECODE_OR_TYPE_ERRORS as exc:
        raise CertificateError(f"{what}: unsupported issuer key: {exc}") from None
    if not valid:
        raise CertificateError(f"{what} signature does not verify with '{describe(issuer)}'")
    return crl_window(crl, what)


def revoked_by(
    cert: x509.Certificate, crls: Sequence[tuple[x509.CertificateRevocationList, str]]
) -> str | None:
    """Check ``cert`` against the CRL its issuer publishes; a reason string if it is revoked.

    A certificate for which no given CRL is responsible is an error, not a pass: a check that
    silently skips revocation is worse than none.
    """
    issuer = cert.issuer
    for crl, what in crls:
        try:
            facts = _crl_facts(crl)
        except _DECODE_OR_TYPE_ERRORS as exc:
            raise CertificateError(f"{what} has malformed entries: {exc}") from None
        if facts.issuer == issuer:
            if cert.serial_number in facts.serials:
                return f"'{describe(cert)}' (serial {cert.serial_number:x}) is revoked by {what}"
            return None
    raise CertificateError(f"no CRL covers '{describe(cert)}' (issuer {issuer.rfc4514_string()})")
