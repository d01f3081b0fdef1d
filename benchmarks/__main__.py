"""``make bench``: one table, every figure a ratio against its baseline from the same run.

Sections (``--only NAME`` runs some of them, e.g. while working on one path):

- ``streaming``: throughput, added one-way latency and bridge CPU per token: the SDK through
  the bridge against plain ``openai`` to the same SSE upstream and a bare TCP relay
  (``benchmarks.streaming``; 5 interleaved rounds by default);
- ``streams``: N active streams at 20 tokens/s for N in 100, 250, 500: delivered rate against
  the offered rate, p99 per chunk against the direct path's;
- ``handshake``: attested-key handshakes against fresh quotes at 0.02 s and 1.0 s simulated
  quote latency (``benchmarks.handshake``), and the client's CPU per handshake;
- ``verify``: TDX quote verification warm, cold and as a CLI process against dcap-qvl
  (``benchmarks.attestation``).

The bridge rows measure whatever bridge this tree holds, run as a subprocess (one worker where
the bridge has ``--workers``). Figures are provisional on a shared machine: compare ratios.
The other modules still run alone with their own detail (``python -m benchmarks.channel``,
``benchmarks.bridge``, ``benchmarks.handshake``, ``benchmarks.attestation``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

from benchmarks import attestation, handshake, streaming
from benchmarks.table import Row, at_most, render

SECTIONS = ("streaming", "streams", "handshake", "verify")
_VERIFY_TARGETS = {
    "verify, warm": at_most(1.0),
    "verify, cold (running process)": at_most(3.0),
    "shroud-attest verify --json": at_most(2.0),
}


def _streaming_sections(rounds: int, wanted: set[str]) -> list[tuple[str, list[Row]]]:
    out: list[tuple[str, list[Row]]] = []
    with streaming.running_paths() as setup:
        if "streaming" in wanted:
            out.append(
                (
                    f"streaming through SDK + bridge, median of {rounds} interleaved rounds",
                    streaming.path_rows(setup, rounds),
                )
            )
        if "streams" in wanted:
            out.append(
                (
                    "active streams at 20 tok/s, one bridge worker, one round each",
                    streaming.streams_rows(setup),
                ),
            )
    return out


def _handshake_rows() -> list[Row]:
    rows: list[Row] = []
    for latency in handshake.LATENCIES:
        _, figures = handshake.measure_bridge(latency, seconds=2.0, samples=20)
        key, fresh = figures["attested key"], figures["fresh quote"]
        rows.append(
            Row(
                f"quote {latency:g} s: handshakes/s, attested key",
                "/s",
                (key.handshakes_per_second,),
                (fresh.handshakes_per_second,),
                "fresh quote",
            )
        )
        for fraction, name in ((0.5, "p50"), (0.99, "p99")):
            rows.append(
                Row(
                    f"quote {latency:g} s: first request {name}, attested key",
                    "s",
                    (handshake.percentile(key.first_requests, fraction),),
                    (handshake.percentile(fresh.first_requests, fraction),),
                    "fresh quote",
                )
            )
        rows.append(
            Row(
                f"quote {latency:g} s: quotes per connection, attested key",
                "",
                (key.quotes / key.connections,),
                (fresh.quotes / fresh.connections,),
                "fresh quote",
            )
        )
    cpu = handshake.client_cpu(100)
    rows.append(
        Row(
            "client CPU per handshake, attested key warm",
            "s",
            (cpu.warm,),
            (cpu.fresh,),
            "fresh quote",
        )
    )
    return rows


def _verify_rows(rounds: int) -> list[Row]:
    return [
        Row(
            row.label,
            "s",
            row.ours,
            row.baseline,
            "dcap-qvl",
            _VERIFY_TARGETS.get(row.label),
        )
        for row in attestation.run(rounds)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the chosen sections and print the table; return a process exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5, help="streaming rounds (default 5)")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    args = parser.parse_args(argv)
    wanted = set(args.only or SECTIONS)
    started = time.perf_counter()
    sections: list[tuple[str, list[Row]]] = []
    if wanted & {"streaming", "streams"}:
        sections += _streaming_sections(args.rounds, wanted)
    steps: list[tuple[str, str, Callable[[], list[Row]]]] = [
        (
            "handshake",
            "attested-key handshakes (simulated quotes priced like hardware)",
            _handshake_rows,
        ),
        (
            "verify",
            "TDX quote verification (vector v4-uptodate)",
            lambda: _verify_rows(max(5, args.rounds)),
        ),
    ]
    for name, title, measure in steps:
        if name in wanted:
            sections.append((title, measure()))
    cpus = len(os.sched_getaffinity(0))
    print(
        render(
            f"make bench: {cpus} CPUs shared by client, upstream, relay and bridge; "
            f"provisional figures (reproduce: make bench)",
            sections,
        )
    )
    print(f"  ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
