"""Fetch TDX collateral from Intel's PCS (API v4) or from a PCCS that mirrors it.

A ``CollateralFetcher`` makes the four requests a TDX quote needs (TDX TCB Info for the
platform's FMSPC, the TDX QE identity, the PCK CRL of the quote's PCK CA, the root CA CRL) and
assembles their answers into a ``Collateral`` (``attestation.collateral``), with ``httpx2``:
``fetch`` blocks, ``fetch_async`` is the same for asyncio callers.

What it checks: that each response is what it claims to be in form (status 200, bounded size,
well-formed JSON with no duplicate members, parsable certificate chains and CRLs, a 64-byte
signature) and that it answers the question asked (TCB Info for *this* FMSPC, a CRL issued by
*this* PCK CA). What it deliberately does not do: decide whether any of it is trustworthy.
Signatures, chains to Intel's root, revocation and dates are ``attestation.verify``'s job, and
nothing fetched here should be used before that runs (``attestation.collateral_cache`` makes
that impossible to forget). This is also why plain ``http://`` PCCS URLs are allowed: the
collateral is Intel-signed, so the transport does not have to be trusted. TLS, when used, is
always verified against the system trust store; there is no way to turn that off.

The signed members (``tcbInfo``, ``enclaveIdentity``) are cut out of the response body as the
exact text Intel signed. Re-serialising them would change whitespace or key order and break the
signature, so they are never re-encoded.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import quote, unquote, urlsplit

import httpx2
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.collateral import Collateral
from attestation.errors import CollateralError, CollateralFetchError
from attestation.pck import parse_pck_extensions, split_pem_chain
from attestation.quote import Quote

# --- Endpoints (Intel SGX and Intel TDX DCAP Provisioning Certification Service API v4, and
# the PCCS design guide, which serves the same v4 paths). ---

INTEL_PCS_URL: Final = "https://api.trustedservices.intel.com"
# PCS API v4 has no root CA CRL endpoint: Intel publishes that CRL (DER) at the CRL
# distribution point named in the Intel SGX Root CA certificate itself.
INTEL_ROOT_CA_CRL_URL: Final = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
_INTEL_PCS_HOST: Final = "api.trustedservices.intel.com"

_SGX_V4: Final = "/sgx/certification/v4"
_TDX_V4: Final = "/tdx/certification/v4"
_PATH_TDX_TCB: Final = _TDX_V4 + "/tcb"  # ?fmspc=<12 hex digits>
_PATH_TDX_QE_IDENTITY: Final = _TDX_V4 + "/qe/identity"
_PATH_PCK_CRL: Final = _SGX_V4 + "/pckcrl"  # ?ca=platform|processor&encoding=der
# PCCS only: serves the root CA CRL it cached, as hex-encoded DER text.
_PATH_PCCS_ROOT_CA_CRL: Final = _SGX_V4 + "/rootcacrl"

# Response headers carrying the URL-encoded PEM issuer chain of each signed object. PCS v4
# names the TCB Info one without the "SGX-" prefix; v3 and older PCCS releases used the prefix.
_HDR_TCB_INFO_CHAIN: Final = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
_HDR_QE_IDENTITY_CHAIN: Final = ("SGX-Enclave-Identity-Issuer-Chain",)
_HDR_PCK_CRL_CHAIN: Final = ("SGX-PCK-CRL-Issuer-Chain",)
# PCS explains failures in these headers (PCS API v4, "Error responses").
_HDR_ERROR_CODE: Final = "Error-Code"
_HDR_ERROR_MESSAGE: Final = "Error-Message"

# Identity fields of the signed JSON objects (TDX TCB Info v3, TDX QE Identity v2).
_TCB_INFO_ID_TDX: Final = "TDX"
_QE_IDENTITY_ID_TDX: Final = "TD_QE"

# The quote signature scheme is ECDSA P-256; Intel's collateral signatures are raw r||s.
_SIGNATURE_LEN: Final = 64
_FMSPC_LEN: Final = 6

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
# The largest real answers are PCK CRLs (tens of KiB); 4 MiB leaves room for growth while
# keeping a hostile or broken server from filling memory.
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024


class CaType(StrEnum):
    """The Intel PCK CA that issued a platform's PCK certificate (the ``ca`` query parameter)."""

    PLATFORM = "platform"
    PROCESSOR = "processor"

    @property
    def common_name_phrase(self) -> str:
        """The phrase that names this CA in its subject CN (and in its CRL's issuer CN)."""
        return _PCK_CA_CN_PHRASES[self]

    def names(self, common_name: str | None) -> bool:
        """Whether a subject or issuer CN names this PCK CA."""
        return common_name is not None and self.common_name_phrase in common_name


# Intel SGX PCK Certificate and Certificate Revocation List Profile: the CAs' subject CNs are
# "Intel SGX PCK Platform CA" and "Intel SGX PCK Processor CA". They are matched by phrase
# (as Intel's QVL matches "SGX PCK Certificate" in leaf CNs) so that Intel-shaped test
# hierarchies (attestation.simulated) resolve too; which CA is *trusted* is verification's call.
_PCK_CA_CN_PHRASES: Final = {
    CaType.PLATFORM: "SGX PCK Platform CA",
    CaType.PROCESSOR: "SGX PCK Processor CA",
}


class ServiceKind(StrEnum):
    """Which service a base URL points at; they differ only in where the root CA CRL lives."""

    PCS = "pcs"
    PCCS = "pccs"


def ca_type_from_pck_chain(chain: list[x509.Certificate]) -> CaType:
    """The PCK CA type of a PCK certificate chain, from its intermediate's subject CN.

    Raises ``CollateralError`` when no certificate in ``chain`` is one of Intel's two PCK CAs,
    or when both appear (no genuine chain has that).
    """
    found = {ca for cert in chain for ca in CaType if ca.names(_common_name(cert.subject))}
    if len(found) != 1:
        names = [_common_name(cert.subject) for cert in chain]
        raise CollateralError(
            f"cannot tell the PCK CA type: expected exactly one subject naming "
            f"{' or '.join(repr(p) for p in _PCK_CA_CN_PHRASES.values())}, got {names}"
        )
    return found.pop()


def collateral_request_for_quote(quote: Quote) -> tuple[bytes, CaType]:
    """The FMSPC and PCK CA type whose collateral verifies ``quote``.

    Both come from the quote's own PCK certificate chain: the FMSPC from the leaf's SGX
    extension, the CA type from the intermediate's subject. The chain is not verified here
    (verification does that, against this very collateral). Raises ``AttestationError``
    subclasses when the chain or its extension is malformed.
    """
    chain = split_pem_chain(quote.signature_data.certification.pck_chain_pem)
    fmspc = parse_pck_extensions(chain[0]).fmspc
    return fmspc, ca_type_from_pck_chain(chain)


def normalize_fmspc(fmspc: bytes | str) -> str:
    """The FMSPC as PCS expects it in a query: 12 upper-case hex digits.

    Raises ``CollateralError`` for anything that is not 6 bytes (or 12 hex digits).
    """
    if isinstance(fmspc, str):
        try:
            raw = bytes.fromhex(fmspc) if fmspc.isascii() else b""
        except ValueError:
            raw = b""
    else:
        raw = bytes(fmspc)
    if len(raw) != _FMSPC_LEN or (isinstance(fmspc, str) and len(fmspc) != 2 * _FMSPC_LEN):
        raise CollateralError(f"an FMSPC is {_FMSPC_LEN} bytes (12 hex digits), got {fmspc!r}")
    return raw.hex().upper()


def check_collateral_answers(collateral: Collateral, fmspc: bytes | str, ca_type: CaType) -> None:
    """Check that ``collateral`` is for a TDX platform with this FMSPC whose PCK CA is ``ca_type``.

    These are not trust checks (verification does those); they catch a server, or a cache
    file, that answered a different question with otherwise genuine Intel-signed data, for
    example another platform's TCB Info. Raises ``CollateralError`` naming the mismatch.
    """
    wanted = normalize_fmspc(fmspc)
    if collateral.tcb_info.id != _TCB_INFO_ID_TDX:
        raise CollateralError(
            f"TCB Info id is {collateral.tcb_info.id!r}, expected {_TCB_INFO_ID_TDX!r}"
        )
    got = collateral.fmspc.hex().upper()
    if got != wanted:
        raise CollateralError(f"TCB Info is for FMSPC {got}, expected {wanted}")
    if collateral.qe_identity.id != _QE_IDENTITY_ID_TDX:
        raise CollateralError(
            f"QE identity id is {collateral.qe_identity.id!r}, expected {_QE_IDENTITY_ID_TDX!r}"
        )
    try:
        crl = x509.load_der_x509_crl(collateral.pck_crl)
    except ValueError as exc:
        raise CollateralError(f"pck_crl is not a DER CRL: {exc}") from exc
    issuer = _common_name(crl.issuer)
    if not ca_type.names(issuer):
        raise CollateralError(
            f"PCK CRL is issued by {issuer!r}, expected the {ca_type.common_name_phrase!r}"
        )


@dataclass(frozen=True)
class _Response:
    url: str
    headers: httpx2.Headers
    body: bytes


class CollateralFetcher:
    """Fetches TDX collateral from Intel PCS (the default) or from a PCCS.

    ``base_url`` is the service root (``https://pccs.example:8081``); a URL that already ends in
    ``/sgx/certification/v4`` or ``/tdx/certification/v4``, as PCCS URLs are often configured,
    is accepted too. ``service`` says whether the URL is Intel's PCS or a PCCS; by default it is
    PCS for Intel's host and PCCS for anything else. It only decides where the root CA CRL is
    fetched from, which ``root_ca_crl_url`` overrides. ``update`` selects the TCB recovery
    stream ("standard" or "early", PCS API v4's ``update`` parameter); ``None`` leaves the
    choice to the service (standard).

    Every request has ``timeout`` seconds in all and may return at most ``max_response_bytes``;
    redirects are not followed. Failures raise ``CollateralFetchError`` naming the URL and,
    when there was one, the HTTP status.
    """

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        service: ServiceKind | str | None = None,
        root_ca_crl_url: str | None = None,
        update: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.base_url = _normalize_base_url(base_url)
        host = urlsplit(self.base_url).hostname
        self.service = (
            ServiceKind(service)
            if service is not None
            else ServiceKind.PCS
            if host == _INTEL_PCS_HOST
            else ServiceKind.PCCS
        )
        if root_ca_crl_url is not None:
            _check_http_url(root_ca_crl_url)
        self.root_ca_crl_url = root_ca_crl_url or (
            INTEL_ROOT_CA_CRL_URL
            if self.service is ServiceKind.PCS
            else self.base_url + _PATH_PCCS_ROOT_CA_CRL
        )
        if update not in (None, "standard", "early"):
            raise ValueError(f"update must be 'standard', 'early' or None, not {update!r}")
        self.update = update
        if not timeout > 0 or max_response_bytes <= 0:  # "not >" also refuses NaN
            raise ValueError("timeout and max_response_bytes must be positive")
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        source = "\n".join((self.base_url, self.root_ca_crl_url, self.update or ""))
        self._source_id = hashlib.sha256(source.encode()).hexdigest()

    @property
    def source_id(self) -> str:
        """A stable digest of where this fetcher's collateral comes from (for cache keys).

        Computed from the settings given to the constructor, which are not meant to change.
        """
        return self._source_id

    def __repr__(self) -> str:
        return f"CollateralFetcher(base_url={self.base_url!r}, service={self.service.value!r})"

    def fetch(self, fmspc: bytes | str, ca_type: CaType | str) -> Collateral:
        """Fetch the collateral for a TDX platform with this FMSPC and PCK CA type.

        The result is *unverified*: pass it to verification before trusting any of it.
        """
        fmspc_hex, ca, urls = self._plan(fmspc, ca_type)
        with httpx2.Client(**self._client_settings()) as client:
            responses = [self._get(client, url) for url in urls]
        return self._assemble(fmspc_hex, ca, *responses)

    async def fetch_async(self, fmspc: bytes | str, ca_type: CaType | str) -> Collateral:
        """``fetch`` for asyncio callers: the same requests, limits and checks."""
        fmspc_hex, ca, urls = self._plan(fmspc, ca_type)
        async with httpx2.AsyncClient(**self._client_settings()) as client:
            responses = [await self._get_async(client, url) for url in urls]
        return self._assemble(fmspc_hex, ca, *responses)

    def fetch_for_quote(self, quote: Quote) -> Collateral:
        """``fetch`` for the FMSPC and PCK CA type named by the quote's PCK chain."""
        fmspc, ca_type = collateral_request_for_quote(quote)
        return self.fetch(fmspc, ca_type)

    # --- What to ask, and what the answers make ---

    def _plan(
        self, fmspc: bytes | str, ca_type: CaType | str
    ) -> tuple[str, CaType, tuple[str, str, str, str]]:
        fmspc_hex = normalize_fmspc(fmspc)
        ca = CaType(ca_type)
        update = {"update": self.update} if self.update else {}
        urls = (
            self._url(_PATH_PCK_CRL, ca=ca.value, encoding="der"),
            self._url(_PATH_TDX_TCB, fmspc=fmspc_hex, **update),
            self._url(_PATH_TDX_QE_IDENTITY, **update),
            self.root_ca_crl_url,
        )
        return fmspc_hex, ca, urls

    def _url(self, path: str, **query: str) -> str:
        url = self.base_url + path
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return url

    def _assemble(
        self,
        fmspc_hex: str,
        ca: CaType,
        pck_crl_resp: _Response,
        tcb_resp: _Response,
        qe_resp: _Response,
        root_resp: _Response,
    ) -> Collateral:
        tcb_info, tcb_sig = _signed_member(tcb_resp, "tcbInfo")
        qe_identity, qe_sig = _signed_member(qe_resp, "enclaveIdentity")
        fields = {
            "pck_crl_issuer_chain": _issuer_chain(pck_crl_resp, _HDR_PCK_CRL_CHAIN),
            "root_ca_crl": _crl_der(root_resp).hex(),
            "pck_crl": _crl_der(pck_crl_resp).hex(),
            "tcb_info_issuer_chain": _issuer_chain(tcb_resp, _HDR_TCB_INFO_CHAIN),
            "tcb_info": tcb_info,
            "tcb_info_signature": tcb_sig,
            "qe_identity_issuer_chain": _issuer_chain(qe_resp, _HDR_QE_IDENTITY_CHAIN),
            "qe_identity": qe_identity,
            "qe_identity_signature": qe_sig,
        }
        try:
            collateral = Collateral.from_json(fields)
            check_collateral_answers(collateral, fmspc_hex, ca)
        except CollateralError as exc:
            raise CollateralFetchError(
                f"{self.base_url} returned unusable collateral: {exc}"
            ) from exc
        return collateral

    # --- HTTP ---

    def _client_settings(self) -> dict[str, Any]:
        # verify=True (the default) is spelled out: TLS is checked against the system trust
        # store and there is no parameter to weaken it.
        return {
            "verify": True,
            "timeout": httpx2.Timeout(self.timeout),
            "follow_redirects": False,
            "headers": {"Accept-Encoding": "identity"},
        }

    def _get(self, client: httpx2.Client, url: str) -> _Response:
        body = _BoundedBody(url, self.max_response_bytes, self.timeout)
        try:
            with client.stream("GET", url) as response:
                body.check_head(response)
                for chunk in response.iter_raw():
                    body.add(chunk)
                return _Response(url=url, headers=response.headers, body=body.data())
        except httpx2.HTTPError as exc:
            raise _transport_error(url, exc) from exc

    async def _get_async(self, client: httpx2.AsyncClient, url: str) -> _Response:
        body = _BoundedBody(url, self.max_response_bytes, self.timeout)
        try:
            async with client.stream("GET", url) as response:
                body.check_head(response)
                async for chunk in response.aiter_raw():
                    body.add(chunk)
                return _Response(url=url, headers=response.headers, body=body.data())
        except httpx2.HTTPError as exc:
            raise _transport_error(url, exc) from exc


def _transport_error(url: str, exc: httpx2.HTTPError) -> CollateralFetchError:
    return CollateralFetchError(f"GET {url} failed: {type(exc).__name__}: {exc}", url=url)


class _BoundedBody:
    """One response's status and headers checked, and its body collected within the limits."""

    def __init__(self, url: str, limit: int, timeout: float) -> None:
        self.url = url
        self.limit = limit
        self.timeout = timeout
        # httpx's timeouts bound each network wait; this bounds the whole exchange, so a
        # server dripping one byte per read timeout cannot hold us for hours.
        self.deadline = time.monotonic() + timeout
        self.chunks: list[bytes] = []
        self.size = 0

    def _error(self, what: str, status: int | None) -> CollateralFetchError:
        return CollateralFetchError(f"GET {self.url}{what}", url=self.url, status=status)

    def check_head(self, response: httpx2.Response) -> None:
        status = response.status_code
        if status != httpx2.codes.OK:
            raise self._error(
                f" failed: HTTP {status}{_pcs_error_detail(response.headers)}", status
            )
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            # We asked for identity; a compressed body could expand past the size limit.
            raise self._error(f": unrequested Content-Encoding {encoding!r}", status)
        declared = response.headers.get("Content-Length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            raise self._error(
                f": response too large (Content-Length {declared!r}, limit {self.limit})", status
            )

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise self._error(f": response exceeds {self.limit} bytes", httpx2.codes.OK)
        if time.monotonic() > self.deadline:
            raise self._error(f": response not complete within {self.timeout} s", httpx2.codes.OK)
        self.chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)


# --- Response decoding ---


def _fail(resp: _Response, what: str) -> CollateralFetchError:
    return CollateralFetchError(f"GET {resp.url}: {what}", url=resp.url, status=200)


def _issuer_chain(resp: _Response, names: tuple[str, ...]) -> str:
    """The PEM chain from the first present header in ``names`` (URL-decoded)."""
    raw = next((resp.headers[n] for n in names if n in resp.headers), None)
    if raw is None:
        raise _fail(resp, f"missing issuer chain header ({' or '.join(names)})")
    try:
        pem = unquote(raw, errors="strict")
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (UnicodeError, ValueError) as exc:
        raise _fail(resp, f"issuer chain header is not a URL-encoded PEM chain: {exc}") from exc
    if not certs:
        raise _fail(resp, "issuer chain header holds no certificate")
    return pem


def _crl_der(resp: _Response) -> bytes:
    """A CRL body as DER; PCS sends DER, PCCS's rootcacrl sends hex text, some send PEM."""
    body = resp.body
    der: bytes
    if body[:1] == b"\x30":
        der = body
    elif body.lstrip().startswith(b"-----BEGIN X509 CRL-----"):
        try:
            return x509.load_pem_x509_crl(body.strip()).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise _fail(resp, f"body is not a CRL: {exc}") from exc
    else:
        text = body.strip()
        if not text or any(c not in _HEX_DIGITS for c in text):
            raise _fail(resp, "body is not a CRL (neither DER, PEM nor hex-encoded DER)")
        try:
            der = binascii.unhexlify(text)
        except binascii.Error as exc:
            raise _fail(resp, f"body is not hex-encoded DER: {exc}") from exc
    try:
        x509.load_der_x509_crl(der)
    except ValueError as exc:
        raise _fail(resp, f"body is not a DER CRL: {exc}") from exc
    return der


def _signed_member(resp: _Response, member: str) -> tuple[str, str]:
    """The exact text of ``member`` and the hex signature from a ``{member, signature}`` body."""
    try:
        text = resp.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(resp, f"body is not UTF-8: {exc}") from exc
    try:
        members = _raw_members(text)
    except (ValueError, RecursionError) as exc:
        raise _fail(resp, f"body is not a well-formed JSON object: {exc}") from exc
    if set(members) != {member, "signature"}:
        raise _fail(resp, f"expected members {member!r} and 'signature', got {sorted(members)}")
    value, raw = members[member]
    if not isinstance(value, dict):
        raise _fail(resp, f"{member!r} is not a JSON object")
    signature, _ = members["signature"]
    if not isinstance(signature, str) or not re.fullmatch(r"[0-9a-fA-F]+", signature):
        raise _fail(resp, "'signature' is not a hex string")
    if len(signature) != 2 * _SIGNATURE_LEN:
        raise _fail(resp, f"'signature' is {len(signature) // 2} bytes, expected {_SIGNATURE_LEN}")
    return raw, signature.lower()


_JSON_WS: Final = " \t\n\r"


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_WS:
        i += 1
    return i


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _raw_members(text: str) -> dict[str, tuple[Any, str]]:
    """Parse a top-level JSON object, keeping each member's value *and* its exact source text.

    The standard library's scanner does the parsing (``raw_decode`` reports where each value
    ends); this loop only walks the object's punctuation. Duplicate member names, trailing
    data and NaN/Infinity are rejected, so what we cut out is what any JSON parser would see.
    """
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    members: dict[str, tuple[Any, str]] = {}
    i = _skip_ws(text, 0)
    if text[i : i + 1] != "{":
        raise ValueError("top level is not an object")
    i = _skip_ws(text, i + 1)
    if text[i : i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i : i + 1] != '"':
                raise ValueError(f"expected a member name at character {i}")
            name, i = decoder.raw_decode(text, i)
            i = _skip_ws(text, i)
            if text[i : i + 1] != ":":
                raise ValueError(f"expected ':' at character {i}")
            start = _skip_ws(text, i + 1)
            value, i = decoder.raw_decode(text, start)
            if name in members:
                raise ValueError(f"duplicate member {name!r}")
            members[name] = (value, text[start:i])
            i = _skip_ws(text, i)
            if text[i : i + 1] == ",":
                i = _skip_ws(text, i + 1)
                continue
            if text[i : i + 1] == "}":
                i += 1
                break
            raise ValueError(f"expected ',' or '}}' at character {i}")
    if _skip_ws(text, i) != len(text):
        raise ValueError(f"trailing data at character {i}")
    return members


def _pcs_error_detail(headers: httpx2.Headers) -> str:
    parts = [
        _printable(headers[h])
        for h in (_HDR_ERROR_CODE, _HDR_ERROR_MESSAGE)
        if h in headers and headers[h].strip()
    ]
    return f" ({': '.join(parts)})" if parts else ""


def _printable(value: str, limit: int = 200) -> str:
    # Server-chosen text goes into exception messages and logs: keep it one short line.
    return "".join(c if c.isprintable() and c.isascii() else "?" for c in value[:limit])


# --- Helpers shared with the cache ---

_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")


def _normalize_base_url(base_url: str) -> str:
    _check_http_url(base_url)
    parts = urlsplit(base_url)
    if parts.query or parts.fragment:
        raise ValueError(f"a base URL has no query or fragment: {base_url!r}")
    url = base_url.rstrip("/")
    for suffix in (_SGX_V4, _TDX_V4):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
    return url.rstrip("/")


def _check_http_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"expected an http(s) URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in a collateral URL would leak into logs and errors")


def _common_name(name: x509.Name) -> str | None:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else None
    return value if isinstance(value, str) else None
