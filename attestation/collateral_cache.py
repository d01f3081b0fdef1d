"""An on-disk cache of TDX collateral whose entries are re-verified every time they are used.

``CollateralCache.get(fmspc, ca_type, now)`` answers from a file when it can and from the
fetcher (Intel PCS or a PCCS) when it must. The cache directory is not trusted: anyone who can
write to it could swap in old, foreign or altered collateral. So an entry is returned only
after the caller's verification function has accepted it *at this ``now``* and after the
entry was shown to answer this question (this FMSPC, this PCK CA, this source). Entries that
are unreadable, malformed or rejected are discarded with a warning and fetched again; they are
never used. An entry expires once ``now`` reaches the earliest ``nextUpdate`` among its parts
(TCB Info, QE identity, root CA CRL, PCK CRL) and is then fetched again; an expired entry is
never served, even when the service is unreachable.

Re-verification is memoised, cheaply and soundly: the cache remembers the SHA-256 of the exact
file bytes it verified, the time it verified them at and the end of their validity window (the
earliest ``nextUpdate`` or certificate ``notAfter``). A later call is answered from the memo only
if the file still holds exactly those bytes and ``now`` lies between that verification time
and the end of the window, the one interval in which a verification of the same bytes cannot
change its answer (all its time checks are "not before" bounds already met and "not after"
bounds not yet reached). Anything else runs the verification function again.

The default ``verify_fn`` is ``IntelCollateralVerifier``: the collateral checks of
``attestation.verify`` (root CA and its CRL, TCB Info and QE identity issuer chains, signatures
and validity, PCK CRL) against Intel's root or the roots the caller trusts. ``verify_quote``
needs a quote and a cache has none, so the verifier runs those same checks, in the same order
and on the same ``attestation.certs`` primitives, on the collateral alone; a differential test
holds the two to the same verdicts.

Deliberately not here: HTTP (``attestation.pcs``) and everything that needs a quote (PCK
chain, QE report, TCB level matching: ``attestation.verify``). Nothing here reads the clock:
``now`` is always the caller's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from cryptography import x509

from attestation.collateral import Collateral
from attestation.errors import AttestationError, CollateralError
from attestation.pcs import (
    CaType,
    CollateralFetcher,
    check_collateral_answers,
    collateral_request_for_quote,
    normalize_fmspc,
)
from attestation.quote import Quote
from attestation.report import CheckStatus
from attestation.trust import resolve_trusted_roots
from attestation.verify import COLLATERAL_CHECK_NAMES, verify_collateral

_log = logging.getLogger(__name__)

# Raises an AttestationError (normally a CollateralError) when the collateral is not
# trustworthy at ``now``; returns None when it is.
VerifyCollateral = Callable[[Collateral, int], None]

_ENTRY_FORMAT: Final = "shroud-collateral-cache/1"
# A real entry is tens of KiB; anything far larger is not ours and is not worth parsing.
MAX_ENTRY_BYTES: Final = 8 * 1024 * 1024


class CollateralSource(Protocol):
    """What the cache needs from a fetcher (``attestation.pcs.CollateralFetcher`` is one)."""

    @property
    def source_id(self) -> str:
        """A stable identifier of where the collateral comes from; it keys cache files."""
        ...

    def fetch(self, fmspc: bytes | str, ca_type: CaType | str) -> Collateral:
        """Fetch (unverified) collateral for this FMSPC and PCK CA type."""
        ...


# The checks of ``attestation.verify.CHECK_NAMES`` that concern the collateral alone (the rest
# need a quote), in that order. ``IntelCollateralVerifier`` runs exactly these.
COLLATERAL_CHECKS: Final = COLLATERAL_CHECK_NAMES


class IntelCollateralVerifier:
    """The default ``verify_fn``: ``attestation.verify.verify_collateral`` at ``now``.

    The same code ``verify_quote`` runs on collateral: the root the TCB Info chain ends in is
    trusted and unrevoked; the TCB Info, QE identity and PCK CRL issuer chains lead to it and
    are unrevoked; both signed bodies carry their signer's signature and are TDX ones; both
    CRLs are signed by their issuers; and ``now`` is inside every certificate's, CRL's and
    body's validity window.

    ``trusted_roots`` defaults to Intel's SGX root CA, as in ``verify_quote``; pass other
    roots only deliberately (a simulated platform's, in development). Raises
    ``CollateralError`` naming the first check that failed and why.
    """

    def __init__(self, trusted_roots: Sequence[x509.Certificate] | None = None) -> None:
        self._roots = resolve_trusted_roots(trusted_roots)

    def __call__(self, collateral: Collateral, now: int) -> None:
        report = verify_collateral(collateral, now=now, trusted_roots=self._roots)
        for check in report.checks:
            if check.status is not CheckStatus.PASS:
                raise CollateralError(f"collateral check {check.name} failed: {check.detail}")


def collateral_expiry(collateral: Collateral) -> int:
    """When ``collateral`` must be fetched again: the earliest ``nextUpdate`` of its parts.

    Covers the TCB Info, the QE identity and both CRLs (UNIX seconds). Raises
    ``CollateralError`` if a CRL is malformed or has no ``nextUpdate`` (it could never go stale,
    so we refuse to cache it).
    """
    crl_updates = [
        _crl_next_update(collateral.root_ca_crl, "root_ca_crl"),
        _crl_next_update(collateral.pck_crl, "pck_crl"),
    ]
    return min(collateral.tcb_info.next_update, collateral.qe_identity.next_update, *crl_updates)


def _crl_next_update(der: bytes, name: str) -> int:
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise CollateralError(f"{name} is not a DER CRL: {exc}") from exc
    if crl.next_update_utc is None:
        raise CollateralError(f"{name} has no nextUpdate")
    return int(crl.next_update_utc.timestamp())


def _memo_valid_until(collateral: Collateral, expiry: int) -> int:
    """The end of the window in which a verification of this collateral keeps its answer."""
    until = expiry
    for name in ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain"):
        pem: str = getattr(collateral, name)
        try:
            certs = x509.load_pem_x509_certificates(pem.encode())
        except ValueError as exc:
            raise CollateralError(f"{name} is not a PEM certificate chain: {exc}") from exc
        for cert in certs:
            until = min(until, int(cert.not_valid_after_utc.timestamp()))
    return until


class _NotAnEntryError(Exception):
    """The cache path holds something no entry we wrote could be (too big, not a file)."""


def _read_regular_file(path: Path, limit: int) -> bytes:
    # O_NONBLOCK: a FIFO planted at the entry's path must not block the open (a hang); the
    # fstat then refuses anything but a regular file, and the read is bounded.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise _NotAnEntryError("not a regular file")
        if info.st_size > limit:
            raise _NotAnEntryError(f"larger than {limit} bytes")
        # Sized by fstat (a read sized by the limit allocates the limit); a file growing under
        # us is still cut off at the limit.
        data = f.read(info.st_size + 1)
        if len(data) > info.st_size:
            data += f.read(limit + 1 - len(data))
    if len(data) > limit:
        raise _NotAnEntryError(f"larger than {limit} bytes")
    return data


@dataclass(frozen=True)
class _Memo:
    digest: bytes  # SHA-256 of the exact file bytes that were verified
    verified_at: int
    valid_until: int  # exclusive
    collateral: Collateral


class CollateralCache:
    """Collateral from ``fetcher``, kept in ``directory``, re-verified by ``verify_fn`` on use.

    ``fetcher`` defaults to Intel PCS (``CollateralFetcher()``) and ``verify_fn`` to
    ``IntelCollateralVerifier()`` (Intel's root). A custom ``verify_fn(collateral, now)`` must
    raise an ``AttestationError`` when the collateral is not trustworthy at ``now``
    (signatures, issuer chains to the trusted root, CRLs, dates) and return ``None``
    otherwise. It must depend only on the collateral and ``now``: that is what makes the memo
    described in the module docstring sound.

    Safe to share between threads (one lock serialises lookups, so concurrent misses fetch
    once) and between processes (files are replaced atomically).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        fetcher: CollateralSource | None = None,
        verify_fn: VerifyCollateral | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.fetcher: CollateralSource = fetcher if fetcher is not None else CollateralFetcher()
        self._verify_fn = verify_fn if verify_fn is not None else IntelCollateralVerifier()
        self._lock = threading.Lock()
        self._memo: dict[Path, _Memo] = {}

    def __repr__(self) -> str:
        return f"CollateralCache(directory={str(self.directory)!r}, fetcher={self.fetcher!r})"

    def path_for(self, fmspc: bytes | str, ca_type: CaType | str) -> Path:
        """The cache file for this FMSPC, PCK CA type and the fetcher's source."""
        source = self.fetcher.source_id[:16]
        return (
            self.directory / f"tdx-{normalize_fmspc(fmspc)}-{CaType(ca_type).value}-{source}.json"
        )

    def get_for_quote(self, quote: Quote, now: int) -> Collateral:
        """``get`` for the FMSPC and PCK CA type named by the quote's PCK certificate chain."""
        fmspc, ca_type = collateral_request_for_quote(quote)
        return self.get(fmspc, ca_type, now)

    def get(self, fmspc: bytes | str, ca_type: CaType | str, now: int) -> Collateral:
        """Collateral for this platform that ``verify_fn`` accepts at ``now``.

        Served from the cache file when it is present, unexpired, answers this request and
        passes verification at ``now``; otherwise fetched, verified, stored and returned.
        Raises ``CollateralFetchError`` when fetching fails, and whatever ``verify_fn`` raises
        when freshly fetched collateral is rejected (nothing is stored then).
        """
        if isinstance(now, bool) or not isinstance(now, int):
            # As in verify_quote: a float from time.time() or a datetime is a caller's slip.
            raise TypeError(f"now must be an int (UNIX seconds), not {type(now).__name__}")
        fmspc_hex = normalize_fmspc(fmspc)
        ca = CaType(ca_type)
        path = self.path_for(fmspc_hex, ca)
        with self._lock:
            cached = self._load(path, fmspc_hex, ca, now)
            if cached is not None:
                return cached
            return self._refresh(path, fmspc_hex, ca, now)

    # --- internals ---

    def _verify(self, collateral: Collateral, now: int) -> None:
        result: object = self._verify_fn(collateral, now)
        if result is not None:
            # A verifier that *returns* its verdict would be silently ignored here.
            raise TypeError("verify_fn must raise on failure and return None")

    def _discard(self, path: Path, reason: str) -> None:
        _log.warning("discarding collateral cache entry %s: %s", path, reason)
        self._memo.pop(path, None)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            _log.warning("could not remove collateral cache entry %s: %s", path, exc)

    def _load(self, path: Path, fmspc_hex: str, ca: CaType, now: int) -> Collateral | None:
        try:
            data = _read_regular_file(path, MAX_ENTRY_BYTES)
        except FileNotFoundError:
            return None
        except _NotAnEntryError as exc:
            self._discard(path, str(exc))
            return None
        except OSError as exc:
            _log.warning("cannot read collateral cache entry %s: %s", path, exc)
            return None
        digest = hashlib.sha256(data).digest()
        memo = self._memo.get(path)
        if (
            memo is not None
            and memo.digest == digest
            and memo.verified_at <= now < memo.valid_until
        ):
            return memo.collateral

        try:
            collateral = self._parse_entry(data, fmspc_hex, ca)
            expiry = collateral_expiry(collateral)
            valid_until = _memo_valid_until(collateral, expiry)
        except (AttestationError, ValueError, RecursionError) as exc:
            self._discard(path, f"malformed: {exc}")
            return None
        if now >= expiry:
            _log.info("collateral cache entry %s expired at %d (now %d)", path, expiry, now)
            self._memo.pop(path, None)
            return None
        try:
            self._verify(collateral, now)
        except AttestationError as exc:
            self._discard(path, f"failed re-verification at {now}: {exc}")
            return None
        self._memo[path] = _Memo(digest, now, valid_until, collateral)
        return collateral

    def _parse_entry(self, data: bytes, fmspc_hex: str, ca: CaType) -> Collateral:
        entry: Any = json.loads(data)
        if not isinstance(entry, dict):
            raise CollateralError("entry is not a JSON object")
        expected = {
            "format": _ENTRY_FORMAT,
            "source": self.fetcher.source_id,
            "fmspc": fmspc_hex,
            "ca_type": ca.value,
        }
        for key, value in expected.items():
            if entry.get(key) != value:
                raise CollateralError(f"entry {key} is {entry.get(key)!r}, expected {value!r}")
        if set(entry) != {*expected, "collateral"}:
            raise CollateralError(f"entry has unexpected keys {sorted(entry)}")
        collateral = Collateral.from_json(entry["collateral"])
        check_collateral_answers(collateral, fmspc_hex, ca)
        return collateral

    def _refresh(self, path: Path, fmspc_hex: str, ca: CaType, now: int) -> Collateral:
        collateral = self.fetcher.fetch(fmspc_hex, ca)
        check_collateral_answers(collateral, fmspc_hex, ca)
        expiry = collateral_expiry(collateral)
        valid_until = _memo_valid_until(collateral, expiry)
        if now >= expiry:
            raise CollateralError(
                f"{self.fetcher!r} served collateral that expired at {expiry} (now {now})"
            )
        self._verify(collateral, now)
        entry = {
            "format": _ENTRY_FORMAT,
            "source": self.fetcher.source_id,
            "fmspc": fmspc_hex,
            "ca_type": ca.value,
            "collateral": collateral.to_json(),
        }
        data = json.dumps(entry, sort_keys=True, indent=1).encode()
        try:
            self._write_atomically(path, data)
        except OSError as exc:
            # The collateral is verified and usable; only the cache is unavailable.
            _log.warning("cannot write collateral cache entry %s: %s", path, exc)
            return collateral
        self._memo[path] = _Memo(hashlib.sha256(data).digest(), now, valid_until, collateral)
        return collateral

    def _write_atomically(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # A reader sees the old file or the new one, never a partial write.
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
