"""The bridge's attested key (``bridge.attested_key``), its minting (``bridge.evidence``), the
fresh-quote budget (``bridge.fresh_quotes``) and the simulated quoting service's cost.

Rotation runs on a real event loop with a settable wall clock and millisecond intervals, so
each rule is exercised in well under a second: rotation at half-life while handshakes keep
getting the old key at once, a failing rotation that keeps serving until expiry and then
refuses (logging ERROR each time), recovery, and rotation on new collateral.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from attestation.simulated import SimulatedTdx
from bridge.attested_key import AttestedKeyHolder, AttestedKeySigner, EvidenceUnavailableError
from bridge.evidence import BridgeEvidence
from bridge.fresh_quotes import FreshQuoteLimiter, retry_after_seconds
from bridge.metrics import QuotePurpose, RotationResult
from bridge.providers.base import QuoteGenerationError, quote_report_data
from bridge.providers.simulated import SimulatedQuoteProvider
from shroud_sdk.channel.ecdsa import verify_raw
from shroud_sdk.channel.evidence import KeyEvidence
from shroud_sdk.channel.handshake import compute_key_report_data, load_p256_point
from tests.channel.doubles import stub_key_evidence

START = 1_800_000_000
LIFETIME = 100


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeMinter:
    """Mints stub attested keys whose window starts at the clock; can fail or block."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.minted: list[KeyEvidence] = []
        self.fail = False
        self.gate: threading.Event | None = None
        self.collateral: bytes | None = b"{}"  # what the stub evidence ships

    def mint_attested_key(self, lifetime: int) -> KeyEvidence:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail:
            raise QuoteGenerationError("the quoting service is down")
        now = int(self.clock())
        minted = stub_key_evidence(not_before=now, not_after=now + lifetime)
        self.minted.append(minted)
        return minted

    def collateral_for(self, quote: bytes) -> bytes | None:
        return self.collateral


async def _until(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def _holder(minter: FakeMinter, clock: Clock, **options: Any) -> AttestedKeyHolder:
    settings: dict[str, Any] = {
        "collateral_check_interval": 1000.0,
        "retry_initial": 0.01,
        "retry_max": 0.02,
        "max_sleep": 0.005,
        **options,
    }
    return AttestedKeyHolder(minter, LIFETIME, clock=clock, **settings)


# -- serving and rotating ------------------------------------------------------------------------


async def test_no_key_is_served_before_the_first_is_minted() -> None:
    clock = Clock()
    holder = _holder(FakeMinter(clock), clock)
    with pytest.raises(EvidenceUnavailableError):
        holder()
    await holder.start()
    try:
        assert holder() is holder.current
    finally:
        await holder.stop()


async def test_a_failing_first_mint_fails_the_start() -> None:
    clock = Clock()
    minter = FakeMinter(clock)
    minter.fail = True
    with pytest.raises(QuoteGenerationError):
        await _holder(minter, clock).start()


async def test_rotation_starts_at_half_life_and_handshakes_never_wait() -> None:
    clock = Clock()
    minter = FakeMinter(clock)
    holder = _holder(minter, clock)
    await holder.start()
    first = holder()
    try:
        clock.now = START + LIFETIME / 2 - 1
        await asyncio.sleep(0.05)
        assert len(minter.minted) == 1  # not yet due
        minter.gate = threading.Event()  # the next quote takes as long as we like
        clock.now = START + LIFETIME / 2
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert holder() is first  # served at once while the new quote is being made
        assert time.monotonic() - started < 0.05
        minter.gate.set()
        await _until(lambda: holder() is not first)
        assert len(minter.minted) == 2
        attested = holder().evidence.attested_key
        assert attested is not None
        assert attested.not_before == START + LIFETIME / 2
    finally:
        await holder.stop()


async def test_failed_rotation_keeps_serving_until_expiry_then_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="bridge.attested_key")
    clock = Clock()
    minter = FakeMinter(clock)
    results: list[RotationResult] = []
    holder = _holder(minter, clock, on_rotation=lambda r, _na: results.append(r))
    await holder.start()
    first = holder()
    try:
        minter.fail = True
        clock.now = START + LIFETIME - 1
        await _until(lambda: holder.failures >= 3)
        assert holder() is first  # the old key, still valid, is still served
        still = [r for r in caplog.records if "still serving" in r.getMessage()]
        assert len(still) >= 3  # loudly, and again on every attempt
        assert all(r.levelno == logging.ERROR for r in still)
        clock.now = START + LIFETIME  # expired
        with pytest.raises(EvidenceUnavailableError, match="expired"):
            holder()
        await _until(lambda: any("refusing" in r.getMessage() for r in caplog.records))
        assert RotationResult.FAILED in results
        minter.fail = False  # the quoting service is back
        await _until(lambda: holder.current is not first)
        assert holder() is holder.current
    finally:
        await holder.stop()


async def test_an_unexpected_error_does_not_end_rotation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Whatever breaks inside the rotation task (here the metrics callback, once), rotation must
    # go on: a task that died quietly would let the key expire and every attested-key
    # handshake be refused, with nothing in the log but the refusals.
    caplog.set_level(logging.ERROR, logger="bridge.attested_key")
    clock = Clock()
    minter = FakeMinter(clock)
    reports: list[RotationResult] = []

    def flaky(result: RotationResult, not_after: int | None) -> None:
        reports.append(result)
        if len(reports) == 2:
            raise RuntimeError("the metrics backend broke")

    holder = _holder(minter, clock, on_rotation=flaky)
    await holder.start()
    try:
        clock.now = START + LIFETIME / 2
        await _until(lambda: len(minter.minted) == 2)
        await _until(lambda: any("unexpectedly" in r.getMessage() for r in caplog.records))
        clock.now = START + LIFETIME
        await _until(lambda: len(minter.minted) == 3)
        assert holder() is minter.minted[-1]
    finally:
        await holder.stop()


async def test_new_collateral_triggers_a_rotation() -> None:
    clock = Clock()
    minter = FakeMinter(clock)
    holder = _holder(minter, clock, collateral_check_interval=0.0)
    await holder.start()
    try:
        await asyncio.sleep(0.05)
        assert len(minter.minted) == 1  # same collateral: nothing to do
        minter.collateral = None  # a failed fetch is not a change
        await asyncio.sleep(0.05)
        assert len(minter.minted) == 1
        minter.collateral = b'{"new": "tcb info"}'
        await _until(lambda: len(minter.minted) >= 2)
    finally:
        await holder.stop()


async def test_stop_ends_the_rotation_task() -> None:
    clock = Clock()
    minter = FakeMinter(clock)
    holder = _holder(minter, clock)
    await holder.start()
    await holder.stop()
    clock.now = START + LIFETIME
    await asyncio.sleep(0.05)
    assert len(minter.minted) == 1


# -- the private key stays private -----------------------------------------------------------


def test_attested_key_cannot_be_read_copied_or_pickled() -> None:
    signer = AttestedKeySigner(ec.generate_private_key(ec.SECP256R1()))
    assert "private key held in memory" in repr(signer)
    assert not hasattr(signer, "__dict__")
    for leak in (pickle.dumps, copy.copy, copy.deepcopy):
        with pytest.raises(TypeError):
            leak(signer)
    holder_repr = repr(AttestedKeyHolder(FakeMinter(Clock()), LIFETIME))
    assert "key=none" in holder_repr


def test_attested_key_must_be_p256() -> None:
    with pytest.raises(ValueError, match="P-256"):
        AttestedKeySigner(ec.generate_private_key(ec.SECP384R1()))


# -- minting with the real (simulated) provider ------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> SimulatedQuoteProvider:
    return SimulatedQuoteProvider(SimulatedTdx.generate(b"attested key minting", now=START).td())


def test_minted_quote_binds_the_attested_key_and_its_window(
    provider: SimulatedQuoteProvider,
) -> None:
    quotes: list[tuple[QuotePurpose, float]] = []
    evidence = BridgeEvidence(
        provider,
        b"runtime log",
        clock=lambda: START + 0.7,
        on_quote=lambda p, s: quotes.append((p, s)),
    )
    minted = evidence.mint_attested_key(600)
    attested = minted.evidence.attested_key
    assert attested is not None
    assert (attested.not_before, attested.not_after) == (START, START + 600)
    assert quote_report_data(minted.evidence.quote) == compute_key_report_data(attested)
    assert [p for p, _ in quotes] == [QuotePurpose.ATTESTED_KEY]
    # The signer is the attested key's private half.
    signature = minted.signer.sign(b"data")
    assert verify_raw(load_p256_point(attested.public_key, "k"), signature, b"data")
    assert "private" in repr(minted.signer)
    evidence(bytes(64))  # a fresh quote is counted as such
    assert [p for p, _ in quotes] == [QuotePurpose.ATTESTED_KEY, QuotePurpose.FRESH]


def test_each_mint_makes_a_new_key(provider: SimulatedQuoteProvider) -> None:
    evidence = BridgeEvidence(provider, b"log")
    keys = {evidence.mint_attested_key(60).evidence.attested_key for _ in range(2)}
    assert len(keys) == 2


# -- the simulated quoting service's cost ------------------------------------------------------


def test_simulated_quote_latency_is_spent_in_the_calling_thread() -> None:
    td = SimulatedTdx.generate(b"latency", now=START).td()
    slow = SimulatedQuoteProvider(td, quote_latency=0.2)
    started = time.monotonic()
    slow.get_quote(bytes(64))
    assert time.monotonic() - started >= 0.2


def test_simulated_quotes_are_serialised_per_host(tmp_path: Path) -> None:
    # Two providers (as two bridge processes would have) on one simulated host directory.
    platform = SimulatedTdx.generate(b"one host", now=START)
    first = SimulatedQuoteProvider(platform.td(), quote_latency=0.2, host_dir=tmp_path)
    second = SimulatedQuoteProvider(platform.td(), quote_latency=0.2, host_dir=tmp_path)
    started = time.monotonic()
    threads = [threading.Thread(target=p.get_quote, args=(bytes(64),)) for p in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started >= 0.4  # one after the other, as a QGS serves them
    assert (tmp_path / "quote.lock").exists()


def test_simulated_quote_latency_is_bounded() -> None:
    td = SimulatedTdx.generate(b"bounds", now=START).td()
    with pytest.raises(ValueError, match="quote_latency"):
        SimulatedQuoteProvider(td, quote_latency=-1)


# -- the fresh-quote budget ---------------------------------------------------------------------


def test_fresh_quotes_are_limited_per_source_with_burst_and_refill() -> None:
    clock = Clock(0)
    limiter = FreshQuoteLimiter(per_minute=6, burst=2, clock=clock)
    assert limiter.try_acquire("10.0.0.1") is None
    assert limiter.try_acquire("10.0.0.1") is None
    wait = limiter.try_acquire("10.0.0.1")
    assert wait is not None
    assert 9.9 < wait <= 10.0  # 6 a minute: one every 10 s
    assert retry_after_seconds(wait) == 10
    assert limiter.try_acquire("10.0.0.2") is None  # another source has its own budget
    clock.now = 10
    assert limiter.try_acquire("10.0.0.1") is None
    assert limiter.try_acquire("10.0.0.1") is not None


def test_fresh_quotes_from_one_ipv6_prefix_share_a_budget() -> None:
    # An IPv6 client holds a whole /64 (2^64 addresses): counted per address, it would get a
    # fresh burst from each and keep the quoting service busy for everyone else.
    limiter = FreshQuoteLimiter(per_minute=6, burst=2, clock=Clock(0))
    granted = [limiter.try_acquire(f"2001:db8:0:1::{i:x}") is None for i in range(1, 50)]
    assert granted.count(True) == 2
    assert limiter.try_acquire("2001:db8:0:2::1") is None  # another /64 has its own budget
    assert limiter.try_acquire("10.0.0.1") is None
    assert limiter.try_acquire("10.0.0.1") is None
    assert limiter.try_acquire("10.0.0.2") is None  # IPv4 is still counted per address
    assert len(limiter) == 4


def test_zero_rate_refuses_every_fresh_quote() -> None:
    limiter = FreshQuoteLimiter(per_minute=0, burst=1)
    wait = limiter.try_acquire("a")
    assert wait is not None
    assert retry_after_seconds(wait) == 86400


def test_fresh_quote_budget_memory_is_bounded() -> None:
    limiter = FreshQuoteLimiter(per_minute=1, burst=1, max_sources=3, clock=Clock(0))
    for i in range(100):
        limiter.try_acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 3
