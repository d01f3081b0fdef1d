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
from pathlib import Path
from urllib.parse import quote

from tests.vectors import tdx_case

HERE = Path(__file__).resolve().parent

# One recording per distinct collateral set (the other vector cases share one of these).
RECORDED_CASES = ("v4-uptodate", "v5-uptodate", "neg-debug-td", "neg-outofdate")


def _header(pem: str) -> str:
    # PCS percent-encodes every reserved character of the PEM, newlines included.
    return quote(pem, safe="-")


def build(case: str) -> None:
    c = tdx_case(case).collateral_json
    out = HERE / case
    out.mkdir(exist_ok=True)
    tcb = '{"tcbInfo":' + c["tcb_info"] + ',"signature":"' + c["tcb_info_signature"] + '"}'
    qe = (
        '{"enclaveIdentity":'
        + c["qe_identity"]
        + ',"signature":"'
        + c["qe_identity_signature"]
        + '"}'
    )
    (out / "tcb.json").write_text(tcb, encoding="utf-8")
    (out / "qe_identity.json").write_text(qe, encoding="utf-8")
    (out / "pckcrl.der").write_bytes(bytes.fromhex(c["pck_crl"]))
    (out / "rootcacrl.der").write_bytes(bytes.fromhex(c["root_ca_crl"]))
    (out / "rootcacrl.hex").write_text(c["root_ca_crl"], encoding="ascii")
    headers = {
        "tcb": {"TCB-Info-Issuer-Chain": _header(c["tcb_info_issuer_chain"])},
        "qe_identity": {
            "SGX-Enclave-Identity-Issuer-Chain": _header(c["qe_identity_issuer_chain"])
        },
        "pckcrl": {"SGX-PCK-CRL-Issuer-Chain": _header(c["pck_crl_issuer_chain"])},
    }
    (out / "headers.json").write_text(json.dumps(headers, indent=1) + "\n", encoding="ascii")


def main() -> None:
    for case in RECORDED_CASES:
        build(case)


if __name__ == "__main__":
    main()
