"""Which root certificates a verification trusts.

By default exactly one: the Intel SGX Provisioning Certification Root CA, shipped in
``attestation/data`` and pinned here by the SHA-256 of its DER, so a replaced file is refused
at load time rather than silently trusted. Any other root (a simulated TDX platform's, a test
CA) is trusted only when the caller passes it explicitly as ``trusted_roots``; there is no
environment variable, file lookup or flag that widens trust implicitly.

Deliberately not here: chain building and CRL checks (``attestation.certs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from attestation._memo import identity_memo

# SHA-256 of the DER of "Intel SGX Root CA" (Intel SGX PCK Certificate and CRL Profile,
# section 2.1; the same fingerprint Intel publishes with the certificate).
INTEL_SGX_ROOT_CA_SHA256 = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)
# Read as a plain file beside this module (package data, see pyproject.toml): going through
# importlib.resources costs a few milliseconds of imports at every process start.
_INTEL_ROOT_FILE = Path(__file__).parent / "data" / "intel_sgx_root_ca.pem"


# Keyed by the object: parsed certificates come from content-keyed caches (attestation._memo).
@identity_memo(maxsize=256)
def certificate_sha256(cert: x509.Certificate) -> bytes:
    """SHA-256 over the certificate's DER: the fingerprint reports and policies use."""
    # fingerprint() hashes the DER; it spares importing the serialization module at start-up.
    return cert.fingerprint(hashes.SHA256())


@lru_cache(maxsize=1)
def intel_sgx_root_ca() -> x509.Certificate:
    """The pinned Intel SGX Root CA. Raises RuntimeError if the shipped file was altered."""
    pem = _INTEL_ROOT_FILE.read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    if certificate_sha256(cert) != INTEL_SGX_ROOT_CA_SHA256:
        # A packaging fault, not bad input: refusing to start beats trusting another root.
        raise RuntimeError("the shipped Intel SGX Root CA does not match its pinned fingerprint")
    return cert


def resolve_trusted_roots(
    trusted_roots: Sequence[x509.Certificate] | None,
) -> tuple[x509.Certificate, ...]:
    """The roots to trust: Intel's when ``None``; otherwise exactly those passed.

    An empty sequence or a non-certificate is a programming error (TypeError/ValueError):
    "trust nothing" can never verify anything, and silently falling back to Intel's root
    would hide the mistake.
    """
    if trusted_roots is None:
        return (intel_sgx_root_ca(),)
    # Typed callers cannot pass these, but a PEM string or a lone certificate is an easy slip.
    candidate: object = trusted_roots
    if isinstance(candidate, (str, bytes)) or not isinstance(candidate, Sequence):
        raise TypeError("trusted_roots must be a sequence of x509.Certificate objects")
    roots = tuple(trusted_roots)
    if not roots:
        raise ValueError("trusted_roots is empty; pass None to trust Intel's root")
    for root in roots:
        if not isinstance(root, x509.Certificate):
            raise TypeError(f"trusted_roots holds a {type(root).__name__}, not a Certificate")
    return roots
