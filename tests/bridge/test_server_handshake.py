"""The bridge server in-process on 127.0.0.1 with an instrumented simulated quote provider:
the concurrent-handshake cap, and the "no oracle" rule (only the core's REPORTDATA is quoted).

Clients here ask for fresh mode (a quote per handshake) where the test is about quotes; the
quote of the start-up attested key is forgotten by ``_server`` so counts start at zero.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from attestation.simulated import SimulatedTdx
from bridge.config import parse_args
from bridge.evidence import BridgeEvidence
from bridge.providers.simulated import SimulatedQuoteProvider
from bridge.server import BridgeServer
from bridge.session import MAX_CLOSE_REASON_BYTES, close_reason, disclosure_refusal_reason
from shroud_sdk.channel.constants import PROTOCOL_VERSION, Suite
from shroud_sdk.channel.handshake import ClientHello
from tests.e2e.client import ChannelClient, chat_body
from tests.e2e.fake_upstream import FakeUpstream

AUDIENCE = "bridge.test.local"
CAP = 2


class InstrumentedProvider(SimulatedQuoteProvider):
    """A simulated provider that records every REPORTDATA and can be slow."""

    def __init__(self, delay: float) -> None:
        platform = SimulatedTdx.generate(b"server handshake tests", now=int(time.time()))
        super().__init__(platform.td())
        self.delay = delay
        self.requests: list[bytes] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def get_quote(self, report_data: bytes) -> bytes:
        with self._lock:
            self.requests.append(report_data)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            time.sleep(self.delay)
            return super().get_quote(report_data)
        finally:
            with self._lock:
                self._in_flight -= 1


async def _server(provider: InstrumentedProvider, *extra: str) -> BridgeServer:
    config = parse_args(
        [
            "--quote-provider",
            "simulated",
            "--listen",
            "127.0.0.1:0",
            "--audience",
            AUDIENCE,
            "--metrics-listen",
            "off",
            "--max-concurrent-handshakes",
            str(CAP),
            # The per-source fresh-quote budget has its own tests (test_attested_key_server).
            "--fresh-quotes-per-minute",
            "6000",
            "--fresh-quote-burst",
            "1000",
            *extra,
        ],
        environ={},
    )
    server = BridgeServer(config, quote_provider=provider)
    await server.start()
    assert len(provider.requests) == 1  # the attested key's quote, made before listening
    provider.requests.clear()
    provider.max_in_flight = 0
    return server


@pytest.fixture
async def slow() -> AsyncIterator[tuple[BridgeServer, InstrumentedProvider]]:
    provider = InstrumentedProvider(delay=0.5)
    server = await _server(provider)
    yield server, provider
    await server.shutdown(grace=1)


@pytest.fixture
async def fast() -> AsyncIterator[tuple[BridgeServer, InstrumentedProvider]]:
    provider = InstrumentedProvider(delay=0.0)
    server = await _server(provider)
    yield server, provider
    await server.shutdown(grace=1)


async def test_handshake_flood_is_bounded_by_the_cap(
    slow: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, provider = slow
    root = provider.platform.root_pem

    async def attempt(source: str) -> ChannelClient | int:
        try:
            return await ChannelClient.connect(
                server.url, audience=AUDIENCE, root_pem=root, fresh=True, local_address=source
            )
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else -1

    # Eight sources: the global cap is the bound here (one source holds at most half of it:
    # tests/stress/test_handshake_flood.py and test_one_source_holds_at_most_half_the_slots).
    outcomes = await asyncio.gather(*(attempt(f"127.0.0.{n}") for n in range(1, 9)))
    clients = [o for o in outcomes if isinstance(o, ChannelClient)]
    refused = [o for o in outcomes if isinstance(o, int)]
    try:
        assert len(clients) == CAP
        assert refused == [1013] * (8 - CAP)  # "try again later", not a hang
        assert provider.max_in_flight <= CAP
        assert len(provider.requests) == CAP  # refused clients never cost a quote
    finally:
        for client in clients:
            await client.close()
    # Once the flood is over, the slots are free again.
    again = await ChannelClient.connect(server.url, audience=AUDIENCE, root_pem=root, fresh=True)
    await again.close()


async def test_one_source_holds_at_most_half_the_slots(
    slow: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, provider = slow
    root = provider.platform.root_pem

    async def attempt(source: str) -> ChannelClient | str:
        try:
            return await ChannelClient.connect(
                server.url, audience=AUDIENCE, root_pem=root, fresh=True, local_address=source
            )
        except ConnectionClosed as exc:
            return exc.rcvd.reason if exc.rcvd is not None else ""

    same = await asyncio.gather(*(attempt("127.0.0.9") for _ in range(3)))
    clients = [o for o in same if isinstance(o, ChannelClient)]
    try:
        assert len(clients) == CAP // 2
        assert sorted(o for o in same if isinstance(o, str)) == [
            "overloaded: source_handshake_slots retry-after=1"
        ] * (3 - CAP // 2)
    finally:
        for client in clients:
            await client.close()


async def test_provider_quotes_only_reportdata_the_core_computed(
    fast: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, provider = fast
    chosen = bytes(range(64))
    # A hostile ClientHello carrying the bytes it would like quoted, in every field it controls.
    hello = ClientHello(
        version=PROTOCOL_VERSION,
        suites=(Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM,),
        nonce=chosen[:32],
        kx=ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        audience=AUDIENCE,
        disclose=(),
        fresh=True,
    )
    async with connect(server.url, compression=None) as ws:
        await ws.send(hello.encode())
        bridge_hello = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(bridge_hello, bytes)
    honest = await ChannelClient.connect(
        server.url, audience=AUDIENCE, root_pem=provider.platform.root_pem, fresh=True
    )
    await honest.close()
    assert len(provider.requests) == 2  # the hostile hello was quoted, but not as it chose
    for report_data in provider.requests:
        assert report_data != chosen
        assert chosen[:32] not in report_data
    verifier_saw = honest.conn._config.verifier.report_data_seen  # type: ignore[attr-defined]
    assert provider.requests[-1] == verifier_saw[-1]


async def test_only_the_evidence_provider_holds_the_quote_provider(
    fast: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, _ = fast
    holders = [
        name for name, value in vars(server).items() if isinstance(value, SimulatedQuoteProvider)
    ]
    context = server._context
    holders += [
        f"context.{name}"
        for name, value in vars(context).items()
        if isinstance(value, SimulatedQuoteProvider)
    ]
    assert holders == []
    assert isinstance(context.channel.evidence_provider, BridgeEvidence)
    assert not any(
        isinstance(getattr(context.channel.evidence_provider, name), SimulatedQuoteProvider)
        for name in dir(context.channel.evidence_provider)
        if not name.startswith("_BridgeEvidence__") and not name.startswith("__")
    )


async def test_text_frame_after_handshake_closes_the_connection(
    fast: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, provider = fast
    client = await ChannelClient.connect(
        server.url, audience=AUDIENCE, root_pem=provider.platform.root_pem
    )
    try:
        await client.ws.send("not binary")
        async with asyncio.timeout(10):
            await client.connection_done.wait()
        assert client.ws.close_code == 1003
    finally:
        await client.close()


async def test_permessage_deflate_is_refused_even_when_offered(
    fast: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, _ = fast
    async with connect(server.url, compression="deflate") as ws:
        assert ws.response is not None
        # Compression before encryption would leak content through record lengths.
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None


async def test_healthz_answers_503_during_a_real_shutdown_while_a_stream_finishes() -> None:
    # A load balancer must see the bridge as draining for the whole grace period: /healthz
    # keeps answering (503), new WebSocket upgrades are refused, in-flight streams finish.
    provider = InstrumentedProvider(delay=0.0)
    with FakeUpstream() as upstream:
        config = parse_args(
            [
                "--quote-provider",
                "simulated",
                "--listen",
                "127.0.0.1:0",
                "--audience",
                AUDIENCE,
                "--metrics-listen",
                "off",
            ],
            environ={},
        )
        server = BridgeServer(config, quote_provider=provider, upstream_base_url=upstream.base_url)
        await server.start()
        health = f"http://127.0.0.1:{server.port}/healthz"
        async with httpx2.AsyncClient(trust_env=False) as http:
            assert (await http.get(health)).status_code == 200
            client = await ChannelClient.connect(
                server.url, audience=AUDIENCE, root_pem=provider.platform.root_pem
            )
            try:
                sid = await client.start(
                    "POST", "/v1/chat/completions", body=chat_body(model="slow-stream", stream=True)
                )
                await client.first_chunk(sid)
                shutdown = asyncio.create_task(server.shutdown(grace=10))
                await asyncio.sleep(0.05)  # shutdown has begun; the stream needs ~1 s more
                probe = await http.get(health)
                assert probe.status_code == 503
                assert probe.text == "shutting down\n"
                with pytest.raises(InvalidStatus) as upgrade:
                    await connect(server.url, compression=None)
                assert upgrade.value.response.status_code == 503
                assert not shutdown.done()
                response = await client.response(sid)
                await asyncio.wait_for(shutdown, 10)
            finally:
                await client.close()
            assert response.ended  # the in-flight stream was allowed to finish
            with pytest.raises(httpx2.ConnectError):  # and then the listener is gone
                await http.get(health)


async def test_quote_outliving_the_handshake_deadline_keeps_its_slot() -> None:
    # The dropped client's quote is still being made in a thread: its slot is not free, so a
    # flood of clients that time out cannot pile up quotes beyond the cap.
    provider = InstrumentedProvider(delay=1.5)
    server = await _server(
        provider, "--handshake-timeout", "0.5", "--max-concurrent-handshakes", "1"
    )
    root = provider.platform.root_pem
    try:
        with pytest.raises(ConnectionClosed) as first:
            await ChannelClient.connect(server.url, audience=AUDIENCE, root_pem=root, fresh=True)
        assert first.value.rcvd is not None
        assert first.value.rcvd.code == 1008  # handshake timeout
        with pytest.raises(ConnectionClosed) as second:
            await ChannelClient.connect(server.url, audience=AUDIENCE, root_pem=root, fresh=True)
        assert second.value.rcvd is not None
        assert second.value.rcvd.code == 1013  # the first quote still runs
        assert provider.max_in_flight == 1
    finally:
        await server.shutdown(grace=1)


async def test_shutdown_does_not_wait_for_connections_still_before_their_handshake() -> None:
    provider = InstrumentedProvider(delay=0.0)
    server = await _server(provider, "--handshake-timeout", "30")
    async with connect(server.url, compression=None) as ws:  # never sends a ClientHello
        started = time.monotonic()
        await server.shutdown(grace=10)
        assert time.monotonic() - started < 2
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1001


async def test_simulated_bridge_refuses_a_client_offering_only_the_real_suite(
    fast: tuple[BridgeServer, InstrumentedProvider],
) -> None:
    server, provider = fast
    hello = ClientHello(
        version=PROTOCOL_VERSION,
        suites=(Suite.P256_HKDF_SHA256_AES256GCM,),
        nonce=bytes(32),
        kx=ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        audience=AUDIENCE,
        disclose=(),
    )
    async with connect(server.url, compression=None) as ws:
        await ws.send(hello.encode())
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 4001
        # The reason says what the bridge supports (public, unauthenticated: protocol.md §9).
        assert ws.close_reason == (
            "suite: no common suite: this bridge supports [32513, 32514]; the client offered [1]"
        )
    assert provider.requests == []  # refused before any quote


class _HardwareLookalike(InstrumentedProvider):
    """Claims to be real hardware, to see which suites the server announces then."""

    @property
    def simulated(self) -> bool:
        return False


async def test_hardware_bridge_never_announces_the_simulated_suite() -> None:
    provider = _HardwareLookalike(delay=0.0)
    server = await _server(provider)
    hello = ClientHello(
        version=PROTOCOL_VERSION,
        suites=(Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM,),
        nonce=bytes(32),
        kx=ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(Encoding.X962, PublicFormat.UncompressedPoint),
        audience=AUDIENCE,
        disclose=(),
    )
    try:
        async with connect(server.url, compression=None) as ws:
            await ws.send(hello.encode())
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == 4001
            assert (ws.close_reason or "").startswith(
                "suite: no common suite: this bridge supports [1, 2]"
            )
        assert provider.requests == []
    finally:
        await server.shutdown(grace=1)


# -- the operator's disclosure rules ---------------------------------------------------------------


async def _refusal(server: BridgeServer, root: bytes, disclose: frozenset[str]) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as refused:
        await ChannelClient.connect(
            server.url, audience=AUDIENCE, root_pem=root, disclose=disclose, fresh=True
        )
    assert refused.value.rcvd is not None
    return refused.value.rcvd.code, refused.value.rcvd.reason


async def test_client_hiding_a_required_field_is_refused_naming_it() -> None:
    provider = InstrumentedProvider(delay=0.0)
    server = await _server(provider, "--disclose-required", "model")
    root = provider.platform.root_pem
    try:
        code, reason = await _refusal(server, root, frozenset({"stream"}))
        assert code == 1008
        assert reason == "disclosure refused: required=model allowed=max_tokens,model,stream"
        # Showing the required field (and only allowed ones) is accepted.
        client = await ChannelClient.connect(
            server.url,
            audience=AUDIENCE,
            root_pem=root,
            disclose=frozenset({"model", "stream"}),
            fresh=True,
        )
        await client.close()
    finally:
        await server.shutdown(grace=1)
    assert provider.requests == [provider.requests[-1]]  # no quote for the refused client


async def test_client_disclosing_a_field_the_operator_does_not_allow_is_refused() -> None:
    provider = InstrumentedProvider(delay=0.0)
    server = await _server(
        provider, "--disclose-allowed", "model", "--disclose-allowed", "max_tokens"
    )
    root = provider.platform.root_pem
    try:
        code, reason = await _refusal(server, root, frozenset({"model", "stream"}))
        assert code == 1008
        assert reason == "disclosure refused: required= allowed=max_tokens,model"
        client = await ChannelClient.connect(
            server.url, audience=AUDIENCE, root_pem=root, disclose=frozenset({"model"})
        )
        await client.close()
    finally:
        await server.shutdown(grace=1)


def test_disclosure_refusal_reason_fits_a_websocket_close_frame() -> None:
    allowed = tuple(f"field_{i:02d}_{'x' * 20}" for i in range(10))
    reason = disclosure_refusal_reason(("model",), allowed)
    assert len(reason.encode("utf-8")) <= MAX_CLOSE_REASON_BYTES
    assert reason.startswith("disclosure refused: required=model allowed=field_00_")
    shown = reason.rpartition("allowed=")[2].split(",")
    assert len(shown) >= 2
    assert set(shown) <= set(allowed)  # whole names only, none cut short
    assert close_reason("é" * 100) == "é" * 61  # never cut inside a character
