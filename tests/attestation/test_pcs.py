"""CollateralFetcher against a local server replaying recorded Intel PCS / PCCS responses.

Nothing here reaches the internet: every request goes to 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote as urlquote

import pytest

from attestation.collateral import Collateral
from attestation.errors import AttestationError, CollateralError, CollateralFetchError
from attestation.pck import split_pem_chain
from attestation.pcs import (
    INTEL_PCS_URL,
    INTEL_ROOT_CA_CRL_URL,
    CaType,
    CollateralFetcher,
    ServiceKind,
    ca_type_from_pck_chain,
    collateral_request_for_quote,
    normalize_fmspc,
)
from attestation.quote_parser import parse_quote
from tests.data.pcs.build_recordings import RECORDED_CASES
from tests.data.pcs.server import (
    PATH_PCCS_ROOT_CA_CRL,
    PATH_PCK_CRL,
    PATH_QE_IDENTITY,
    PATH_ROOT_CA_CRL_DER,
    PATH_TCB,
    RecordedPcs,
    Reply,
    serve_recorded_pcs,
)
from tests.vectors import TDX_CASES, tdx_case


@pytest.fixture
def pcs() -> Iterator[RecordedPcs]:
    with serve_recorded_pcs() as state:
        yield state


def pcs_fetcher(pcs: RecordedPcs, **kwargs: object) -> CollateralFetcher:
    """A fetcher that treats the local server as Intel PCS (DER root CRL at Intel's CDP path)."""
    return CollateralFetcher(
        pcs.url,
        service=ServiceKind.PCS,
        root_ca_crl_url=pcs.root_ca_crl_url,
        timeout=5.0,
        **kwargs,  # type: ignore[arg-type]
    )


def tcb_body(pcs: RecordedPcs) -> bytes:
    return pcs.recorded("tcb.json")


# --- Fetching the real collateral back ---------------------------------------------------


@pytest.mark.parametrize("case", RECORDED_CASES)
def test_fetch_from_pcs_reproduces_the_vector_collateral(pcs: RecordedPcs, case: str) -> None:
    pcs.case = case
    collateral = pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert collateral.to_json() == tdx_case(case).collateral_json


@pytest.mark.parametrize("case", RECORDED_CASES)
def test_fetch_from_pccs_reproduces_the_vector_collateral(pcs: RecordedPcs, case: str) -> None:
    pcs.case = case
    # PCCS URLs are commonly configured with the v4 prefix; the hex root CA CRL comes from PCCS.
    fetcher = CollateralFetcher(pcs.url + "/sgx/certification/v4/")
    assert fetcher.service is ServiceKind.PCCS
    collateral = fetcher.fetch(pcs.fmspc(), "platform")
    assert collateral.to_json() == tdx_case(case).collateral_json
    assert pcs.requests[-1] == PATH_PCCS_ROOT_CA_CRL


def test_signed_text_is_cut_out_byte_for_byte(pcs: RecordedPcs) -> None:
    # Re-serialising would drop this whitespace and break Intel's signature over the text.
    case = tdx_case(pcs.case).collateral_json
    spaced_tcb = case["tcb_info"].replace('"version":3', '"version" :  3')
    signature = case["tcb_info_signature"]
    body = f'{{ "signature" : "{signature}" ,\n "tcbInfo" :{spaced_tcb} }}'
    pcs.overrides[PATH_TCB] = Reply(body=body.encode(), headers=pcs.recorded_headers("tcb"))
    collateral = pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert collateral.tcb_info.raw == spaced_tcb


def test_fetched_collateral_round_trips_through_json(pcs: RecordedPcs) -> None:
    collateral = pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    again = Collateral.from_json(json.loads(json.dumps(collateral.to_json())))
    assert again == collateral


def test_requests_use_the_v4_paths_and_parameters(pcs: RecordedPcs) -> None:
    pcs_fetcher(pcs, update="early").fetch(bytes.fromhex(pcs.fmspc()), CaType.PLATFORM)
    assert pcs.requests == [
        PATH_PCK_CRL + "?ca=platform&encoding=der",
        PATH_TCB + f"?fmspc={pcs.fmspc()}&update=early",
        PATH_QE_IDENTITY + "?update=early",
        PATH_ROOT_CA_CRL_DER,
    ]


def test_lower_case_fmspc_is_sent_upper_case(pcs: RecordedPcs) -> None:
    pcs.case = "neg-debug-td"  # its TCB Info spells the FMSPC in lower case
    pcs_fetcher(pcs).fetch(pcs.fmspc().lower(), CaType.PLATFORM)
    assert PATH_TCB + f"?fmspc={pcs.fmspc()}" in pcs.requests


def test_legacy_tcb_info_chain_header_name_is_accepted(pcs: RecordedPcs) -> None:
    chain = pcs.recorded_headers("tcb")["TCB-Info-Issuer-Chain"]
    pcs.overrides[PATH_TCB] = Reply(
        body=tcb_body(pcs), headers={"SGX-TCB-Info-Issuer-Chain": chain}
    )
    collateral = pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert (
        collateral.tcb_info_issuer_chain
        == tdx_case(pcs.case).collateral_json["tcb_info_issuer_chain"]
    )


def test_pem_encoded_pck_crl_is_accepted(pcs: RecordedPcs) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = x509.load_der_x509_crl(pcs.recorded("pckcrl.der")).public_bytes(Encoding.PEM)
    pcs.overrides[PATH_PCK_CRL] = Reply(body=pem, headers=pcs.recorded_headers("pckcrl"))
    collateral = pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert collateral.pck_crl == pcs.recorded("pckcrl.der")


# --- Failures are typed and name the URL ----------------------------------------------------


@pytest.mark.parametrize("status", [404, 500, 503])
def test_error_status_is_a_fetch_error_naming_url_and_status(pcs: RecordedPcs, status: int) -> None:
    pcs.overrides[PATH_TCB] = Reply(
        status, b"nope", {"Error-Code": "NotFound", "Error-Message": "x" * 5000}
    )
    with pytest.raises(CollateralFetchError) as info:
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.status == status
    assert info.value.url is not None
    assert PATH_TCB in info.value.url
    assert f"HTTP {status}" in str(info.value)
    assert "NotFound" in str(info.value)
    assert len(str(info.value)) < 500  # server-chosen text is cut short


def test_unknown_fmspc_is_a_fetch_error(pcs: RecordedPcs) -> None:
    with pytest.raises(CollateralFetchError) as info:
        pcs_fetcher(pcs).fetch("00" * 6, CaType.PLATFORM)
    assert info.value.status == 404


def test_redirect_is_not_followed(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_QE_IDENTITY] = Reply(302, headers={"Location": "http://example.com/"})
    with pytest.raises(CollateralFetchError) as info:
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.status == 302
    assert not any("example.com" in r for r in pcs.requests)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>gateway error</html>", "well-formed JSON"),
        (b"[1, 2]", "well-formed JSON"),
        (b'{"tcbInfo": {"id": "TDX"}}', "expected members"),
        (b'{"tcbInfo": "x", "signature": "00"}', "not a JSON object"),
        (b'{"tcbInfo": {}, "signature": "zz"}', "not a hex string"),
        (b'{"tcbInfo": {}, "signature": "0011"}', "expected 64"),
        (b'{"tcbInfo": {}, "tcbInfo": {}, "signature": "00"}', "duplicate"),
        (b'{"tcbInfo": {}, "signature": "00"} trailing', "trailing"),
        (b'{"tcbInfo": {"x": NaN}, "signature": "00"}', "NaN"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"", "well-formed JSON"),
        (b"[" * 100_000, "well-formed JSON"),
    ],
)
def test_garbage_tcb_info_body_is_a_fetch_error(pcs: RecordedPcs, body: bytes, reason: str) -> None:
    pcs.overrides[PATH_TCB] = Reply(body=body, headers=pcs.recorded_headers("tcb"))
    with pytest.raises(CollateralFetchError, match=reason) as info:
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.url is not None
    assert PATH_TCB in info.value.url


def test_signed_body_that_fails_the_collateral_model_is_a_fetch_error(pcs: RecordedPcs) -> None:
    body = b'{"tcbInfo": {"id": "TDX"}, "signature": "' + b"00" * 64 + b'"}'
    pcs.overrides[PATH_TCB] = Reply(body=body, headers=pcs.recorded_headers("tcb"))
    with pytest.raises(CollateralFetchError, match="unusable collateral"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"TCB-Info-Issuer-Chain": "not a chain"},
        {"TCB-Info-Issuer-Chain": urlquote("-----BEGIN CERTIFICATE-----\nAAAA\n")},
        {"TCB-Info-Issuer-Chain": "%FF%FE"},
    ],
)
def test_missing_or_bad_issuer_chain_header_is_a_fetch_error(
    pcs: RecordedPcs, headers: dict[str, str]
) -> None:
    pcs.overrides[PATH_TCB] = Reply(body=tcb_body(pcs), headers=headers)
    with pytest.raises(CollateralFetchError, match="issuer chain"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)


@pytest.mark.parametrize("body", [b"", b"\x30\x03abc", b"not hex at all", b"abc", b"0102"])
def test_garbage_crl_is_a_fetch_error(pcs: RecordedPcs, body: bytes) -> None:
    pcs.overrides[PATH_ROOT_CA_CRL_DER] = Reply(body=body)
    with pytest.raises(CollateralFetchError, match=r"CRL|hex") as info:
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.url == pcs.root_ca_crl_url


def test_oversized_response_with_length_is_refused_before_reading(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_PCK_CRL] = Reply(body=b"0" * 70_000, headers=pcs.recorded_headers("pckcrl"))
    with pytest.raises(CollateralFetchError, match="too large"):
        pcs_fetcher(pcs, max_response_bytes=65_536).fetch(pcs.fmspc(), CaType.PLATFORM)


def test_oversized_response_without_length_is_cut_off(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_PCK_CRL] = Reply(
        body=b"0" * 300_000, headers=pcs.recorded_headers("pckcrl"), content_length=False
    )
    with pytest.raises(CollateralFetchError, match="exceeds 65536 bytes"):
        pcs_fetcher(pcs, max_response_bytes=65_536).fetch(pcs.fmspc(), CaType.PLATFORM)


def test_compressed_response_is_refused(pcs: RecordedPcs) -> None:
    # We ask for identity; a compressed body could expand far past the size limit.
    headers = {**pcs.recorded_headers("tcb"), "Content-Encoding": "gzip"}
    pcs.overrides[PATH_TCB] = Reply(body=tcb_body(pcs), headers=headers)
    with pytest.raises(CollateralFetchError, match="Content-Encoding"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)


def test_slow_server_times_out_as_a_fetch_error(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_QE_IDENTITY] = Reply(body=b"{}", delay=1.0)
    fetcher = CollateralFetcher(
        pcs.url, service="pcs", root_ca_crl_url=pcs.root_ca_crl_url, timeout=0.2
    )
    with pytest.raises(CollateralFetchError, match="Timeout") as info:
        fetcher.fetch(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.status is None
    assert info.value.url is not None
    assert PATH_QE_IDENTITY in info.value.url


def test_server_dripping_bytes_is_cut_off_at_the_deadline(pcs: RecordedPcs) -> None:
    # Each byte arrives well within the read timeout; the whole answer never does.
    pcs.overrides[PATH_QE_IDENTITY] = Reply(
        body=pcs.recorded("qe_identity.json")[:100],
        headers=pcs.recorded_headers("qe_identity"),
        drip=0.02,
    )
    fetcher = CollateralFetcher(
        pcs.url, service="pcs", root_ca_crl_url=pcs.root_ca_crl_url, timeout=0.5
    )
    with pytest.raises(CollateralFetchError, match=r"not complete within 0\.5 s"):
        fetcher.fetch(pcs.fmspc(), CaType.PLATFORM)


def test_unreachable_service_is_a_fetch_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Nothing listens on the port now: the connection is refused.
    fetcher = CollateralFetcher(f"http://127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(CollateralFetchError, match="Connect"):
        fetcher.fetch("B0C06F000000", CaType.PLATFORM)


# --- The server answering a different question ---------------------------------------------


def test_tcb_info_for_another_fmspc_is_refused(pcs: RecordedPcs) -> None:
    # Genuine Intel-signed TCB Info, but for a different platform family.
    pcs.case = "v5-uptodate"
    other = tcb_body(pcs)
    other_headers = pcs.recorded_headers("tcb")
    pcs.case = "v4-uptodate"
    pcs.overrides[PATH_TCB] = Reply(body=other, headers=other_headers)
    with pytest.raises(CollateralFetchError, match="FMSPC 90C06F000000, expected B0C06F000000"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)


def test_pck_crl_of_the_other_ca_is_refused(pcs: RecordedPcs) -> None:
    # Asked for the Processor CA's CRL, the server answers with the Platform CA's.
    pcs.overrides[PATH_PCK_CRL] = Reply(
        body=pcs.recorded("pckcrl.der"), headers=pcs.recorded_headers("pckcrl")
    )
    with pytest.raises(CollateralFetchError, match="expected the 'SGX PCK Processor CA'"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PROCESSOR)


def test_sgx_qe_identity_is_refused_for_tdx(pcs: RecordedPcs) -> None:
    body = pcs.recorded("qe_identity.json").replace(b'"id":"TD_QE"', b'"id":"QE"')
    pcs.overrides[PATH_QE_IDENTITY] = Reply(body=body, headers=pcs.recorded_headers("qe_identity"))
    with pytest.raises(CollateralFetchError, match="QE identity id is 'QE'"):
        pcs_fetcher(pcs).fetch(pcs.fmspc(), CaType.PLATFORM)


# --- Configuration ---------------------------------------------------------------------------


def test_default_is_intel_pcs_with_intel_root_crl() -> None:
    fetcher = CollateralFetcher()
    assert fetcher.base_url == INTEL_PCS_URL
    assert fetcher.service is ServiceKind.PCS
    assert fetcher.root_ca_crl_url == INTEL_ROOT_CA_CRL_URL


def test_pccs_root_crl_comes_from_the_pccs() -> None:
    fetcher = CollateralFetcher("https://pccs.internal:8081/tdx/certification/v4")
    assert fetcher.service is ServiceKind.PCCS
    assert fetcher.root_ca_crl_url == "https://pccs.internal:8081/sgx/certification/v4/rootcacrl"


def test_source_id_differs_per_service() -> None:
    a = CollateralFetcher("https://pccs-a.internal")
    b = CollateralFetcher("https://pccs-b.internal")
    assert a.source_id != b.source_id
    assert a.source_id == CollateralFetcher("https://pccs-a.internal/").source_id


@pytest.mark.parametrize(
    "url",
    [
        "ftp://pccs.internal",
        "pccs.internal",
        "https://",
        "https://pccs.internal/?x=1",
        "https://user:secret@pccs.internal",
    ],
)
def test_bad_base_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        CollateralFetcher(url)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"update": "sometimes"},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"max_response_bytes": -1},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        CollateralFetcher("https://pccs.internal", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fmspc", ["B0C06F", "B0C06F00000G", "B0C06F0000000", "ÄÄC06F000000", b"\x00" * 5]
)
def test_malformed_fmspc_is_refused(fmspc: str | bytes) -> None:
    with pytest.raises(CollateralError, match="FMSPC"):
        normalize_fmspc(fmspc)


# --- What to fetch for a quote ----------------------------------------------------------------


@pytest.mark.parametrize("case", TDX_CASES)
def test_quote_names_its_fmspc_and_platform_ca(case: str) -> None:
    vector = tdx_case(case)
    fmspc, ca_type = collateral_request_for_quote(parse_quote(vector.quote))
    assert fmspc.hex().upper() == json.loads(vector.collateral_json["tcb_info"])["fmspc"].upper()
    assert ca_type is CaType.PLATFORM


def test_fetch_for_quote_fetches_that_platforms_collateral(pcs: RecordedPcs) -> None:
    quote = parse_quote(tdx_case("v5-uptodate").quote)
    pcs.case = "v5-uptodate"
    collateral = pcs_fetcher(pcs).fetch_for_quote(quote)
    assert collateral.to_json() == tdx_case("v5-uptodate").collateral_json


def test_chain_without_a_pck_ca_has_no_ca_type() -> None:
    chain = split_pem_chain(
        tdx_case("v4-uptodate").collateral_json["tcb_info_issuer_chain"].encode()
    )
    with pytest.raises(CollateralError, match="PCK CA type"):
        ca_type_from_pck_chain(chain)


def test_fetch_errors_are_attestation_errors() -> None:
    # Callers catch AttestationError; nothing else may escape a fetch.
    assert issubclass(CollateralFetchError, AttestationError)


# --- The asyncio variant: same requests, same limits, same checks ------------------------------


@pytest.mark.parametrize("case", RECORDED_CASES)
async def test_fetch_async_reproduces_the_vector_collateral(pcs: RecordedPcs, case: str) -> None:
    pcs.case = case
    collateral = await pcs_fetcher(pcs).fetch_async(pcs.fmspc(), CaType.PLATFORM)
    assert collateral.to_json() == tdx_case(case).collateral_json
    assert pcs.requests == [
        PATH_PCK_CRL + "?ca=platform&encoding=der",
        PATH_TCB + f"?fmspc={pcs.fmspc()}",
        PATH_QE_IDENTITY,
        PATH_ROOT_CA_CRL_DER,
    ]


async def test_fetch_async_error_status_names_url_and_status(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_QE_IDENTITY] = Reply(500)
    with pytest.raises(CollateralFetchError, match="HTTP 500") as info:
        await pcs_fetcher(pcs).fetch_async(pcs.fmspc(), CaType.PLATFORM)
    assert info.value.status == 500
    assert info.value.url is not None
    assert PATH_QE_IDENTITY in info.value.url


async def test_fetch_async_cuts_off_oversized_response(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_PCK_CRL] = Reply(
        body=b"0" * 300_000, headers=pcs.recorded_headers("pckcrl"), content_length=False
    )
    with pytest.raises(CollateralFetchError, match="exceeds 65536 bytes"):
        await pcs_fetcher(pcs, max_response_bytes=65_536).fetch_async(pcs.fmspc(), CaType.PLATFORM)


async def test_fetch_async_cuts_off_a_dripping_server_at_the_deadline(pcs: RecordedPcs) -> None:
    pcs.overrides[PATH_TCB] = Reply(
        body=tcb_body(pcs)[:100], headers=pcs.recorded_headers("tcb"), drip=0.02
    )
    fetcher = CollateralFetcher(
        pcs.url, service="pcs", root_ca_crl_url=pcs.root_ca_crl_url, timeout=0.5
    )
    with pytest.raises(CollateralFetchError, match=r"not complete within 0\.5 s"):
        await fetcher.fetch_async(pcs.fmspc(), CaType.PLATFORM)


async def test_fetch_async_refuses_tcb_info_for_another_fmspc(pcs: RecordedPcs) -> None:
    pcs.case = "v5-uptodate"
    other, other_headers = tcb_body(pcs), pcs.recorded_headers("tcb")
    pcs.case = "v4-uptodate"
    pcs.overrides[PATH_TCB] = Reply(body=other, headers=other_headers)
    with pytest.raises(CollateralFetchError, match="FMSPC 90C06F000000"):
        await pcs_fetcher(pcs).fetch_async(pcs.fmspc(), CaType.PLATFORM)
