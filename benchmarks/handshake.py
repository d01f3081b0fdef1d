"""New-connection cost with hardware-priced quotes: attested-key mode against fresh quotes.

Run: ``python -m benchmarks.handshake [--seconds S] [--samples N]``. A real ``python -m bridge``
subprocess with the simulated provider runs at each modelled quote latency (0.02 s: configfs-tsm
with fast polling; 1.0 s: a stock kernel), pinned to one CPU when there are two (this process
on the other). For each latency and evidence mode:

- handshakes/s: concurrent clients (the channel core over real WebSockets, the SDK's verifier)
  open connections for ``S`` seconds; completed handshakes per wall second, and the bridge
  process's CPU per handshake (``/proc``). Fresh mode is bounded by one quote at a time per host.
- first request: ``N`` new ``shroud_sdk.OpenAI`` clients one after another, each timing its
  first ``models.list()`` (connect, handshake, verification, request): p50 and p99.
- quotes: how many the bridge made meanwhile (its ``shroud_bridge_quotes_generated_total``).

Then, in this process and without any network: the client's CPU per handshake (thread CPU
time of building the ClientHello and processing the BridgeHello) with warm evidence (the
process-wide verdict cache holds the bridge's attested key), next to a fresh-mode handshake
whose quote must be verified every time. This module measures; it asserts no speed targets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

import shroud_sdk
from attestation.eventlog import RuntimeEventLog
from attestation.policy import MeasurementPins, Policy
from attestation.simulated import SimulatedTdx
from benchmarks.processes import bridge_flags, process_tree, tree_cpu_seconds
from bridge.evidence import BridgeEvidence, SimulatedCollateral
from bridge.providers.simulated import SimulatedQuoteProvider
from shroud_sdk.channel.connection import (
    BridgeConfig,
    BridgeConnection,
    ClientConfig,
    ClientConnection,
)
from shroud_sdk.channel.constants import SIMULATED_SUITES
from shroud_sdk.verifier import AttestationVerifier
from tests.bridgeproc import BridgeProcess, running_bridge

LATENCIES = (0.02, 1.0)
_CONCURRENCY = 8
# Fresh quotes are made one at a time per host: more clients than this only lengthen the queue
# (past the bridge's handshake timeout at 1 s per quote), not the rate.
_FRESH_CONCURRENCY = 3


def _quotes(bridge: BridgeProcess) -> float:
    text = httpx2.get(bridge.metrics_url, timeout=10, trust_env=False).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "shroud_bridge_quotes_generated_total"
    )


def _pin(bridge: BridgeProcess) -> str:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned"
    for pid in process_tree(bridge.process.pid):  # its workers too, where it forks them
        os.sched_setaffinity(pid, {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"bridge on CPU {cpus[0]}"


async def _handshakes(bridge: BridgeProcess, policy: Policy, seconds: float) -> tuple[int, float]:
    verifier = AttestationVerifier(policy)
    config = ClientConfig(
        audience=bridge.audience,
        verifier=verifier,
        allowed_suites=frozenset(SIMULATED_SUITES),
        fresh_quote=policy.fresh_quote,
    )
    done = 0
    deadline = time.perf_counter() + seconds

    async def loop() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            conn = ClientConnection(config)
            async with connect(bridge.url, compression=None, max_size=None) as ws:
                for message in conn.data_to_send():
                    await ws.send(message)
                reply = await ws.recv()
                assert isinstance(reply, bytes)
                conn.receive_data(reply)
                done += 1

    started = time.perf_counter()
    clients = _FRESH_CONCURRENCY if policy.fresh_quote else _CONCURRENCY
    await asyncio.gather(*(loop() for _ in range(clients)))
    return done, time.perf_counter() - started


def _first_requests(bridge: BridgeProcess, policy: Policy, samples: int) -> list[float]:
    with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=policy) as client:
        client.models.list()  # warm-up, not timed: imports and first-use set-up in this process
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        with shroud_sdk.OpenAI(bridge_url=bridge.url, api_key="k", policy=policy) as client:
            client.models.list()
            timings.append(time.perf_counter() - started)
    return timings


def _with(policy: Policy, **changes: object) -> Policy:
    data = policy.model_dump(exclude={"custom_checks"})
    data.update(changes)
    return Policy(**data)


@dataclass(frozen=True)
class ModeFigures:
    """One evidence mode at one quote latency."""

    handshakes_per_second: float
    bridge_cpu_per_handshake: float  # seconds
    first_requests: list[float]  # seconds, one per new client
    quotes: float
    connections: int


def measure_bridge(
    latency: float, seconds: float, samples: int
) -> tuple[str, dict[str, ModeFigures]]:
    """Both evidence modes against one bridge whose quotes take ``latency`` s.

    Returns how the processes were pinned and the figures by mode (``attested key``,
    ``fresh quote``).
    """
    original = os.sched_getaffinity(0)
    figures: dict[str, ModeFigures] = {}
    with (
        tempfile.TemporaryDirectory() as workdir,
        running_bridge(
            Path(workdir),
            args=[
                *bridge_flags(),
                "--simulated-quote-latency",
                str(latency),
                "--fresh-quotes-per-minute",
                "6000",
                "--fresh-quote-burst",
                "1000",
                # One source (this process) may hold half of the slots.
                "--max-concurrent-handshakes",
                str(2 * _CONCURRENCY),
            ],
        ) as bridge,
    ):
        try:
            pinned = _pin(bridge)
            for label, policy in (
                ("attested key", bridge.policy),
                ("fresh quote", _with(bridge.policy, fresh_quote=True)),
            ):
                fresh = policy.fresh_quote
                window = seconds if not fresh else max(seconds, 3 * latency)
                quotes_before = _quotes(bridge)
                cpu_before = tree_cpu_seconds(bridge.process.pid)
                count, wall = asyncio.run(_handshakes(bridge, policy, window))
                cpu = tree_cpu_seconds(bridge.process.pid) - cpu_before
                n = samples if not fresh else max(3, min(samples, int(6 / max(latency, 0.1))))
                firsts = _first_requests(bridge, policy, n)
                figures[label] = ModeFigures(
                    count / wall,
                    cpu / max(count, 1),
                    firsts,
                    _quotes(bridge) - quotes_before,
                    count + n + 1,  # one warm-up client
                )
        finally:
            os.sched_setaffinity(0, original)
    return pinned, figures


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank ``fraction`` percentile of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _print_bridge(latency: float, seconds: float, samples: int) -> None:
    pinned, figures = measure_bridge(latency, seconds, samples)
    print(f"  quote latency {latency:.2f} s ({pinned})")
    for label, f in figures.items():
        print(
            f"    {label:<12}: {f.handshakes_per_second:7.1f} handshakes/s "
            f"(bridge CPU {f.bridge_cpu_per_handshake * 1e3:.2f} ms each); first request "
            f"p50 {statistics.median(f.first_requests) * 1e3:7.1f} ms, "
            f"p99 {percentile(f.first_requests, 0.99) * 1e3:7.1f} ms over "
            f"{len(f.first_requests)} new clients; {f.quotes:.0f} quotes for "
            f"{f.connections} connections (one warm-up)"
        )


@dataclass(frozen=True)
class ClientCpu:
    """Client CPU per handshake (thread time, no network), seconds."""

    warm: float  # attested key, the verdict cache holds it
    second_client: float  # attested key, a new client in the same process
    cold: float  # attested key, the first verification in the process
    fresh: float  # fresh quote: the quote verified every time


def client_cpu(rounds: int) -> ClientCpu:
    """Client CPU per handshake with warm, first-in-client, cold and fresh evidence."""
    platform = SimulatedTdx.generate(b"handshake benchmark", now=int(time.time()))
    provider = SimulatedQuoteProvider(platform.td())
    runtime_log = RuntimeEventLog().to_bytes()  # nothing measured: RTMR3 stays zero
    evidence = BridgeEvidence(provider, runtime_log, collateral=SimulatedCollateral(provider))
    key_evidence = evidence.mint_attested_key(600)
    bridge_config = BridgeConfig(
        audience="bench",
        evidence_provider=evidence,
        key_evidence=lambda: key_evidence,
        usage_signing_key=ec.generate_private_key(ec.SECP256R1()),
        suites=frozenset(SIMULATED_SUITES),
    )
    td = platform.td()
    policy = Policy(
        trusted_roots=(platform.root_pem.decode("ascii"),),
        allow_simulated_tee=True,
        measurements=MeasurementPins(mr_td=frozenset({td.measurements.mr_td.hex()})),
    )

    def one(fresh: bool, verifier: AttestationVerifier) -> float:
        config = ClientConfig(
            audience="bench",
            verifier=verifier,
            allowed_suites=frozenset(SIMULATED_SUITES),
            fresh_quote=fresh,
        )
        bridge = BridgeConnection(bridge_config)
        start = time.thread_time()
        client = ClientConnection(config)
        (hello,) = client.data_to_send()
        client_cpu = time.thread_time() - start
        bridge.receive_data(hello)  # not the client's cost
        (bridge_hello,) = bridge.data_to_send()
        start = time.thread_time()
        client.receive_data(bridge_hello)
        return client_cpu + time.thread_time() - start

    def median_of(fn: Callable[[], float], n: int) -> float:
        return statistics.median(fn() for _ in range(n))

    key_verifier = AttestationVerifier(policy)
    cold = one(False, key_verifier)
    warm = median_of(lambda: one(False, key_verifier), rounds)
    second_client = one(False, AttestationVerifier(policy))  # new client, same process
    fresh_verifier = AttestationVerifier(policy)
    fresh = median_of(lambda: one(True, fresh_verifier), max(5, rounds // 4))
    return ClientCpu(warm, second_client, cold, fresh)


def main(argv: list[str] | None = None) -> None:
    """Print handshake rates, first-request latencies and client handshake CPU."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=3.0, help="per handshake-rate run")
    parser.add_argument("--samples", type=int, default=30, help="new clients per latency run")
    parser.add_argument("--rounds", type=int, default=200, help="client CPU rounds")
    args = parser.parse_args(argv)
    print("handshake benchmark (simulated quotes priced like hardware)")
    for latency in LATENCIES:
        _print_bridge(latency, args.seconds, args.samples)
    cpu = client_cpu(args.rounds)
    print(f"  client CPU per handshake, no network (median of {args.rounds})")
    print(f"    attested key, warm evidence   {cpu.warm * 1e3:7.3f} ms")
    print(f"    attested key, another client  {cpu.second_client * 1e3:7.3f} ms (first handshake)")
    print(f"    attested key, cold            {cpu.cold * 1e3:7.3f} ms (first ever: full verify)")
    print(
        f"    fresh quote, warm collateral  {cpu.fresh * 1e3:7.3f} ms "
        "(its quote verified each time)"
    )


if __name__ == "__main__":
    main()
