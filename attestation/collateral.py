"""Intel DCAP collateral for TDX quotes, as typed, immutable structures.

Collateral is what Intel's Provisioning Certification Service publishes for a platform family
(FMSPC): the TDX TCB Info (v3, ``id`` ``TDX``), the TD Quoting Enclave identity (v2, ``id``
``TD_QE``), the two CRLs (root CA and PCK CA) and the issuer chains that sign them. This module
loads it from, and writes it back to, the "QuoteCollateralV3" JSON shape used by dcap-qvl and by
our test vectors. The signed JSON bodies are kept as the exact text that was signed, because a
signature is over bytes, not over a re-serialisation.

Deliberately not here: any signature, chain, CRL or date check (``attestation.verify``), and
fetching from Intel PCS or a PCCS (the PCS client). Parsing is strict about structure and
types so that verification never has to guess, but a ``Collateral`` that parses is not yet
trusted: only ``attestation.verify`` establishes that.

All times are UNIX seconds (UTC), the unit ``verify_quote(..., now=...)`` takes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from attestation.errors import CollateralError
from attestation.report import TcbStatus

# --- Spec constants ---------------------------------------------------------------------------
# Intel PCS API v4, "TDX TCB Info" (tcbInfo v3) and "TDX QE Identity" (enclaveIdentity v2).
TCB_INFO_ID_TDX = "TDX"
TCB_INFO_VERSION = 3
QE_IDENTITY_ID_TD_QE = "TD_QE"
QE_IDENTITY_VERSION = 2
TCB_COMPONENT_COUNT = 16  # sgxtcbcomponents / tdxtcbcomponents: 16 entries each
FMSPC_LEN = 6
PCE_ID_LEN = 2
MRSIGNER_SEAM_LEN = 48  # tdxModule.mrsigner (SHA-384)
SEAM_ATTRIBUTES_LEN = 8
QE_MRSIGNER_LEN = 32  # enclaveIdentity.mrsigner (SHA-256)
QE_ATTRIBUTES_LEN = 16
QE_MISCSELECT_LEN = 4
ECDSA_P256_SIGNATURE_LEN = 64  # raw r || s, as PCS returns it

# The nine keys of the QuoteCollateralV3 JSON shape, in dcap-qvl's order.
COLLATERAL_JSON_KEYS = (
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
)


# --- TCB Info ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcbLevel:
    """One platform TCB level: the SVNs a platform must reach for ``status`` to apply."""

    sgx_components: tuple[int, ...]  # 16 SVNs, compared with the PCK certificate's
    pce_svn: int
    tdx_components: tuple[int, ...]  # 16 SVNs, compared with the TD report's TEE_TCB_SVN
    tcb_date: int
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class ModuleTcbLevel:
    """One TCB level of a TDX module identity, or of the QE identity: ISVSVN -> status."""

    isv_svn: int
    tcb_date: int
    status: TcbStatus
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True)
class TdxModule:
    """``tdxModule``: the signer and attributes of the TDX module (TDX 1.0 style)."""

    mrsigner: bytes  # 48
    attributes: bytes  # 8
    attributes_mask: bytes  # 8


@dataclass(frozen=True)
class TdxModuleIdentity:
    """One ``tdxModuleIdentities`` entry: a module major version (``TDX_01``...) and its TCB."""

    id: str
    mrsigner: bytes  # 48
    attributes: bytes  # 8
    attributes_mask: bytes  # 8
    tcb_levels: tuple[ModuleTcbLevel, ...]


@dataclass(frozen=True)
class TcbInfo:
    """A parsed TCB Info (v3) body. ``raw`` is the exact JSON text Intel signed."""

    id: str
    version: int
    issue_date: int
    next_update: int
    fmspc: bytes  # 6
    pce_id: bytes  # 2
    tcb_type: int
    tcb_evaluation_data_number: int
    tdx_module: TdxModule | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]
    tcb_levels: tuple[TcbLevel, ...]
    raw: str

    @classmethod
    def parse(cls, text: str) -> TcbInfo:
        """Parse the signed TCB Info JSON text; CollateralError names the offending field."""
        obj = _load_json_object(text, "tcb_info")
        r = _Reader(obj, "tcb_info")
        version = r.int_("version")
        if version != TCB_INFO_VERSION:
            raise CollateralError(
                f"tcb_info.version is {version}; only TCB Info v{TCB_INFO_VERSION} is supported"
            )
        tdx_module = None
        if "tdxModule" in obj:
            m = r.sub("tdxModule")
            tdx_module = TdxModule(
                mrsigner=m.hex_("mrsigner", MRSIGNER_SEAM_LEN),
                attributes=m.hex_("attributes", SEAM_ATTRIBUTES_LEN),
                attributes_mask=m.hex_("attributesMask", SEAM_ATTRIBUTES_LEN),
            )
        identities: list[TdxModuleIdentity] = []
        for ir in r.list_of_objects("tdxModuleIdentities", required=False):
            identities.append(
                TdxModuleIdentity(
                    id=ir.str_("id"),
                    mrsigner=ir.hex_("mrsigner", MRSIGNER_SEAM_LEN),
                    attributes=ir.hex_("attributes", SEAM_ATTRIBUTES_LEN),
                    attributes_mask=ir.hex_("attributesMask", SEAM_ATTRIBUTES_LEN),
                    tcb_levels=tuple(_isv_levels(ir)),
                )
            )
        levels: list[TcbLevel] = []
        for lr in r.list_of_objects("tcbLevels"):
            tcb = lr.sub("tcb")
            levels.append(
                TcbLevel(
                    sgx_components=tcb.svn_components("sgxtcbcomponents"),
                    pce_svn=tcb.int_("pcesvn"),
                    tdx_components=tcb.svn_components("tdxtcbcomponents"),
                    tcb_date=lr.time_("tcbDate"),
                    status=lr.status_("tcbStatus"),
                    advisory_ids=lr.advisories(),
                )
            )
        if not levels:
            raise CollateralError("tcb_info.tcbLevels is empty")
        return cls(
            id=r.str_("id"),
            version=version,
            issue_date=r.time_("issueDate"),
            next_update=r.time_("nextUpdate"),
            fmspc=r.hex_("fmspc", FMSPC_LEN),
            pce_id=r.hex_("pceId", PCE_ID_LEN),
            tcb_type=r.int_("tcbType"),
            tcb_evaluation_data_number=r.int_("tcbEvaluationDataNumber"),
            tdx_module=tdx_module,
            tdx_module_identities=tuple(identities),
            tcb_levels=tuple(levels),
            raw=text,
        )


# --- QE Identity ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QeIdentity:
    """A parsed QE Identity (enclaveIdentity v2). ``raw`` is the exact JSON text Intel signed."""

    id: str
    version: int
    issue_date: int
    next_update: int
    tcb_evaluation_data_number: int
    miscselect: int  # u32 as it appears in the QE report (little-endian bytes in the JSON hex)
    miscselect_mask: int
    attributes: bytes  # 16
    attributes_mask: bytes  # 16
    mrsigner: bytes  # 32
    isv_prod_id: int
    tcb_levels: tuple[ModuleTcbLevel, ...]
    raw: str

    @classmethod
    def parse(cls, text: str) -> QeIdentity:
        """Parse the signed QE Identity JSON text; CollateralError names the offending field."""
        obj = _load_json_object(text, "qe_identity")
        r = _Reader(obj, "qe_identity")
        version = r.int_("version")
        if version != QE_IDENTITY_VERSION:
            raise CollateralError(
                f"qe_identity.version is {version}; only v{QE_IDENTITY_VERSION} is supported"
            )
        levels = tuple(_isv_levels(r))
        if not levels:
            raise CollateralError("qe_identity.tcbLevels is empty")
        return cls(
            id=r.str_("id"),
            version=version,
            issue_date=r.time_("issueDate"),
            next_update=r.time_("nextUpdate"),
            tcb_evaluation_data_number=r.int_("tcbEvaluationDataNumber"),
            # Intel's QVL reads these 4 hex bytes as the little-endian u32 of the report.
            miscselect=int.from_bytes(r.hex_("miscselect", QE_MISCSELECT_LEN), "little"),
            miscselect_mask=int.from_bytes(r.hex_("miscselectMask", QE_MISCSELECT_LEN), "little"),
            attributes=r.hex_("attributes", QE_ATTRIBUTES_LEN),
            attributes_mask=r.hex_("attributesMask", QE_ATTRIBUTES_LEN),
            mrsigner=r.hex_("mrsigner", QE_MRSIGNER_LEN),
            isv_prod_id=r.int_("isvprodid"),
            tcb_levels=levels,
            raw=text,
        )


# --- The collateral bundle --------------------------------------------------------------------


@dataclass(frozen=True)
class Collateral:
    """Everything needed to verify quotes from one FMSPC, in the QuoteCollateralV3 shape.

    Issuer chains are kept as PEM text and CRLs as DER bytes; they are parsed and checked by
    ``attestation.verify`` (which reports a failed check rather than raising). The two signed
    bodies are parsed here, because callers (caches, fetchers) need their dates.
    """

    pck_crl_issuer_chain: str
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: str
    tcb_info: TcbInfo
    tcb_info_signature: bytes
    qe_identity_issuer_chain: str
    qe_identity: QeIdentity
    qe_identity_signature: bytes

    @property
    def fmspc(self) -> bytes:
        """The platform family (FMSPC, 6 bytes) this collateral's TCB Info describes."""
        return self.tcb_info.fmspc

    @property
    def issue_date(self) -> int:
        """The oldest ``issueDate`` of the two signed bodies (UNIX seconds)."""
        return min(self.tcb_info.issue_date, self.qe_identity.issue_date)

    @property
    def next_update(self) -> int:
        """The earliest ``nextUpdate`` of the two signed bodies: refresh before this."""
        return min(self.tcb_info.next_update, self.qe_identity.next_update)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Collateral:
        """Load the QuoteCollateralV3 JSON object (already decoded from JSON text).

        Unknown or missing keys, non-hex binary fields and malformed signed bodies raise
        CollateralError naming the field.
        """
        if not isinstance(obj, Mapping):
            raise CollateralError("collateral must be a JSON object")
        unknown = sorted(set(obj) - set(COLLATERAL_JSON_KEYS))
        if unknown:
            raise CollateralError(f"collateral has unknown keys: {', '.join(map(str, unknown))}")
        missing = [k for k in COLLATERAL_JSON_KEYS if k not in obj]
        if missing:
            raise CollateralError(f"collateral is missing keys: {', '.join(missing)}")
        return cls(
            pck_crl_issuer_chain=_text(obj, "pck_crl_issuer_chain"),
            root_ca_crl=_hex_field(obj, "root_ca_crl"),
            pck_crl=_hex_field(obj, "pck_crl"),
            tcb_info_issuer_chain=_text(obj, "tcb_info_issuer_chain"),
            tcb_info=TcbInfo.parse(_text(obj, "tcb_info")),
            tcb_info_signature=_hex_field(obj, "tcb_info_signature", ECDSA_P256_SIGNATURE_LEN),
            qe_identity_issuer_chain=_text(obj, "qe_identity_issuer_chain"),
            qe_identity=QeIdentity.parse(_text(obj, "qe_identity")),
            qe_identity_signature=_hex_field(
                obj, "qe_identity_signature", ECDSA_P256_SIGNATURE_LEN
            ),
        )

    @classmethod
    def from_json_text(cls, text: str | bytes) -> Collateral:
        """Load collateral from QuoteCollateralV3 JSON text."""
        return cls.from_json(_load_json_object(text, "collateral"))

    def to_json(self) -> dict[str, Any]:
        """The QuoteCollateralV3 JSON object: same keys as ``from_json`` read, signed text kept."""
        return {
            "pck_crl_issuer_chain": self.pck_crl_issuer_chain,
            "root_ca_crl": self.root_ca_crl.hex(),
            "pck_crl": self.pck_crl.hex(),
            "tcb_info_issuer_chain": self.tcb_info_issuer_chain,
            "tcb_info": self.tcb_info.raw,
            "tcb_info_signature": self.tcb_info_signature.hex(),
            "qe_identity_issuer_chain": self.qe_identity_issuer_chain,
            "qe_identity": self.qe_identity.raw,
            "qe_identity_signature": self.qe_identity_signature.hex(),
        }


# --- Strict readers ---------------------------------------------------------------------------


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last duplicate silently; signed bodies must mean one thing only.
    out = dict(pairs)
    if len(out) != len(pairs):  # the common case costs one dict build, the rare one a search
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CollateralError(f"duplicate JSON key {key!r}")
            seen.add(key)
    return out


def _load_json_object(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates)
    except CollateralError as exc:
        raise CollateralError(f"{where}: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise CollateralError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CollateralError(f"{where} must be a JSON object")
    return obj


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj[key]
    if not isinstance(value, str) or not value:
        raise CollateralError(f"collateral.{key} must be a non-empty string")
    return value


def _hex_field(obj: Mapping[str, Any], key: str, length: int | None = None) -> bytes:
    value = _text(obj, key)
    try:
        data = bytes.fromhex(value)
    except ValueError:
        raise CollateralError(f"collateral.{key} is not hex") from None
    if length is not None and len(data) != length:
        raise CollateralError(f"collateral.{key} is {len(data)} bytes, expected {length}")
    return data


def _parse_time(value: str, where: str) -> int:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise CollateralError(f"{where} is not an ISO 8601 date: {value!r}") from None
    if when.tzinfo is None:
        raise CollateralError(f"{where} has no time zone: {value!r}")
    return int(when.timestamp())


class _Reader:
    """Typed access to one JSON object, with errors that name the field's path."""

    def __init__(self, obj: dict[str, Any], path: str) -> None:
        self._obj = obj
        self._path = path

    def _get(self, key: str) -> Any:
        if key not in self._obj:
            raise CollateralError(f"{self._path}.{key} is missing")
        return self._obj[key]

    def int_(self, key: str) -> int:
        value = self._get(key)
        # bool is an int in Python; JSON true is not an SVN.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CollateralError(f"{self._path}.{key} must be a non-negative integer")
        return value

    def str_(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise CollateralError(f"{self._path}.{key} must be a string")
        return value

    def hex_(self, key: str, length: int) -> bytes:
        value = self.str_(key)
        try:
            data = bytes.fromhex(value)
        except ValueError:
            raise CollateralError(f"{self._path}.{key} is not hex") from None
        if len(data) != length:
            raise CollateralError(f"{self._path}.{key} is {len(data)} bytes, expected {length}")
        return data

    def time_(self, key: str) -> int:
        return _parse_time(self.str_(key), f"{self._path}.{key}")

    def status_(self, key: str) -> TcbStatus:
        value = self.str_(key)
        try:
            return TcbStatus(value)
        except ValueError:
            raise CollateralError(
                f"{self._path}.{key} is an unknown TCB status {value!r}"
            ) from None

    def advisories(self) -> tuple[str, ...]:
        if "advisoryIDs" not in self._obj:
            return ()
        value = self._obj["advisoryIDs"]
        if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
            raise CollateralError(f"{self._path}.advisoryIDs must be a list of strings")
        return tuple(value)

    def sub(self, key: str) -> _Reader:
        value = self._get(key)
        if not isinstance(value, dict):
            raise CollateralError(f"{self._path}.{key} must be an object")
        return _Reader(value, f"{self._path}.{key}")

    def list_of_objects(self, key: str, *, required: bool = True) -> list[_Reader]:
        if not required and key not in self._obj:
            return []
        value = self._get(key)
        if not isinstance(value, list):
            raise CollateralError(f"{self._path}.{key} must be a list")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise CollateralError(f"{self._path}.{key}[{i}] must be an object")
            out.append(_Reader(item, f"{self._path}.{key}[{i}]"))
        return out

    def svn_components(self, key: str) -> tuple[int, ...]:
        # Fast path for the shape Intel publishes (16 objects, each with an int "svn" in
        # 0..255): no reader per entry. Anything else goes through the checked path below,
        # which accepts exactly the same inputs and names the fault in the ones it refuses.
        value = self._obj.get(key)
        if type(value) is list and len(value) == TCB_COMPONENT_COUNT:
            svns = tuple(item.get("svn") if type(item) is dict else None for item in value)
            if all(type(svn) is int and 0 <= svn <= 0xFF for svn in svns):
                return cast(tuple[int, ...], svns)
        return self._svn_components_checked(key)

    def _svn_components_checked(self, key: str) -> tuple[int, ...]:
        items = self.list_of_objects(key)
        if len(items) != TCB_COMPONENT_COUNT:
            raise CollateralError(
                f"{self._path}.{key} has {len(items)} entries, expected {TCB_COMPONENT_COUNT}"
            )
        svns = tuple(item.int_("svn") for item in items)
        if any(svn > 0xFF for svn in svns):
            raise CollateralError(f"{self._path}.{key} has an SVN above 255")
        return svns


def _isv_levels(r: _Reader) -> list[ModuleTcbLevel]:
    levels = []
    for lr in r.list_of_objects("tcbLevels"):
        levels.append(
            ModuleTcbLevel(
                isv_svn=lr.sub("tcb").int_("isvsvn"),
                tcb_date=lr.time_("tcbDate"),
                status=lr.status_("tcbStatus"),
                advisory_ids=lr.advisories(),
            )
        )
    return levels
