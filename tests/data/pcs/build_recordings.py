"""Rebuild the recorded PCS responses in this directory from the shared vectors' collateral.

Each case directory holds what Intel PCS API v4 returns for one platform, byte for byte in PCS's
shapes: the TDX TCB Info and QE identity bodies (``{"tcbInfo": <signed text>, "signature":
<hex>}``, the signed text embedded exactly), the PCK CRL and root CA CRL as DER, the PCCS form of
the root CA CRL (hex text), and the URL-encoded issuer chain headers. The collateral in the
vectors was itself assembled from such responses, so this reverses that step.

Run from the repository root: ``.venv/bin/python -m tests.data.pcs.build_recordings``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from tests.vectors import tdx_case

HERE = Path(__file__).resolve().parent

# One recording per distinct collateral set (the other vector cases share one of these).
RECORDED_CASES = ("v4-uptodate", "v5-uptodate", "neg-debug-td", "neg-outofdate")


def _header(pem: str) -> str:
    # PCS percent-encodes every reserved character of the PEM, newlines included.
    return quote(pem, safe="-")


def recorded_files(c: Mapping[str, str]) -> dict[str, bytes]:
    """PCS's responses for one QuoteCollateralV3 object, keyed by recording file name."""
    tcb = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
    qe = (
        '{"enclaveIdentity":'
        + c["qe_identity"]
        + ',"signature":"'
        + c["qe_identity_signature"]
        + '"}'
    )
    headers = {
        "tcb": {"TCB-Info-Issuer-Chain": _header(c["tcb_info_issuer_chain"])},
        "qe_identity": {
            "SGX-Enclave-Identity-Issuer-Chain": _header(c["qe_identity_issuer_chain"])
        },
        "pckcrl": {"SGX-PCK-CRL-Issuer-Chain": _header(c["pck_crl_issuer_chain"])},
    }
    return {
        "tcb.json": tcb.encode("utf-8"),
        "qe_identity.json": qe.encode("utf-8"),
        "pckcrl.der": bytes.fromhex(c["pck_crl"]),
        "rootcacrl.der": bytes.fromhex(c["root_ca_crl"]),
        "rootcacrl.hex": c["root_ca_crl"].encode("ascii"),
        "headers.json": (json.dumps(headers, indent=1) + "\n").encode("ascii"),
    }


def build(case: str) -> None:
    out = HERE / case
    out.mkdir(exist_ok=True)
    for name, data in recorded_files(tdx_case(case).collateral_json).items():
        (out / name).write_bytes(data)


def main() -> None:
    for case in RECORDED_CASES:
        build(case)


if __name__ == "__main__":
    main()
