"""How fast we verify a real TDX quote, next to dcap-qvl (Rust) on the same input.

Run: ``python -m benchmarks.attestation [--rounds N]``. Everything runs in this one process on
the ``v4-uptodate`` vector at its own ``now``; each figure is the median over rounds of the
mean time per verification within a round.

- cold: every verification starts from the collateral JSON (parse it, check its signatures,
  chains and CRLs, then the quote), as a client with no cache would.
- warm: collateral parsed and checked once beforehand (ours: ``VerifiedCollateral``;
  dcap-qvl: its ``QuoteCollateralV3`` object, which is all the caching it offers), then only
  the per-quote work.
- parse: ``parse_quote`` alone.

Both verifiers must accept the quote before anything is timed, so a fast failure can never
pass for a fast verification. This module measures; it asserts no speed targets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import dcap_qvl

from attestation.collateral import Collateral
from attestation.quote_parser import parse_quote
from attestation.verify import VerifiedCollateral, verify_quote
from tests.vectors import tdx_case

CASE = "v4-uptodate"


@dataclass(frozen=True)
class Timing:
    label: str
    seconds: float  # median per operation


def _measure(label: str, fn: Callable[[], object], rounds: int, per_round: int) -> Timing:
    fn()  # warm-up (imports, lazy tables), not timed
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        samples.append((time.perf_counter() - start) / per_round)
    return Timing(label, statistics.median(samples))


def run(rounds: int = 15) -> dict[str, Timing]:
    """Time every variant; raises RuntimeError if either verifier rejects the vector."""
    case = tdx_case(CASE)
    quote, now = case.quote, case.now
    collateral_text = json.dumps(case.collateral_json)

    def ours_cold() -> bool:
        collateral = Collateral.from_json(json.loads(collateral_text))
        return verify_quote(quote, collateral, now=now).ok

    verified = VerifiedCollateral.prepare(Collateral.from_json(case.collateral_json))

    def ours_warm() -> bool:
        return verify_quote(quote, verified, now=now).ok

    def qvl_cold() -> str:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)
        return str(dcap_qvl.verify(quote, collateral, now).status)

    qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)

    def qvl_warm() -> str:
        return str(dcap_qvl.verify(quote, qvl_collateral, now).status)

    if not (ours_cold() and ours_warm()):
        raise RuntimeError(f"our verifier rejects {CASE}; nothing to benchmark")
    if qvl_cold() != "UpToDate" or qvl_warm() != "UpToDate":
        raise RuntimeError(f"dcap-qvl does not report {CASE} UpToDate")

    return {
        "ours_cold": _measure("ours, cold", ours_cold, rounds, 5),
        "qvl_cold": _measure("dcap-qvl, cold", qvl_cold, rounds, 5),
        "ours_warm": _measure("ours, warm", ours_warm, rounds, 50),
        "qvl_warm": _measure("dcap-qvl, warm", qvl_warm, rounds, 20),
        "parse": _measure("ours, parse_quote only", lambda: parse_quote(quote), rounds, 200),
    }


def main(argv: list[str] | None = None) -> None:
    """Print the timings and the ours/dcap-qvl ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per variant")
    args = parser.parse_args(argv)
    results = run(args.rounds)
    print(f"TDX quote verification, vector {CASE}, median of {args.rounds} rounds")
    for timing in results.values():
        print(f"  {timing.label:<26} {timing.seconds * 1e6:10.1f} us")
    for mode in ("cold", "warm"):
        ratio = results[f"ours_{mode}"].seconds / results[f"qvl_{mode}"].seconds
        print(f"  ours / dcap-qvl, {mode:<5}     {ratio:10.2f} x")


if __name__ == "__main__":
    main()
