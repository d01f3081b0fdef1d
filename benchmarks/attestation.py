"""How fast we verify a real TDX quote, as ratios against dcap-qvl (Rust) on the same input.

Run: ``python -m benchmarks.attestation [--rounds N]`` (``make bench`` runs it). Everything
uses the ``v4-uptodate`` vector at its own ``now``. Ours and dcap-qvl alternate within every
round, and each round yields one ratio (ours / dcap-qvl), so load from other processes on the
machine hits both sides alike; the table gives the min, median and max of those ratios, and
the median time of each side.

In one running process:

- warm: collateral checked once beforehand (ours: ``VerifiedCollateral``; dcap-qvl: its
  ``QuoteCollateralV3`` object, all the caching it offers), then only the per-quote work.
- cold: every verification starts from the collateral JSON text (parse it, check its
  signatures, chains and CRLs, then the quote), as a client does when a bridge ships new
  collateral. Our process-wide parse caches (certificates, CRLs, PCK extension: keyed by
  content) are warm, as they are in a running client; signatures are checked every time.
- cold, first sight: the same with those parse caches emptied before every verification.

As processes (each a fresh interpreter, byte code compiled beforehand as a pip install does):

- CLI: ``shroud-attest verify QUOTE --collateral FILE --at NOW --json`` against a Python
  process that reads the same two files and verifies them with dcap-qvl.
- CLI + policy file: the same with ``--policy FILE`` (a policy pinning the vector's MRTD),
  which loads the policy parser (pydantic); same baseline.

Both verifiers must accept the quote before anything is timed, so a fast failure can never
pass for a fast verification. This module measures; it asserts no speed targets.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dcap_qvl

from attestation.certs import clear_parse_caches
from attestation.collateral import Collateral
from attestation.verify import VerifiedCollateral, verify_quote
from tests.vectors import REPO_ROOT, tdx_case

CASE = "v4-uptodate"

_QVL_PROCESS = """
import sys, dcap_qvl
quote = open(sys.argv[1], "rb").read()
collateral = dcap_qvl.QuoteCollateralV3.from_json(open(sys.argv[2]).read())
result = dcap_qvl.verify(quote, collateral, int(sys.argv[3]))
assert str(result.status) == "UpToDate", result.status
"""


@dataclass(frozen=True)
class Row:
    """One comparison: seconds per operation for each side, per round."""

    label: str
    ours: tuple[float, ...]
    baseline: tuple[float, ...]

    @property
    def ratios(self) -> list[float]:
        return [o / b for o, b in zip(self.ours, self.baseline, strict=True)]

    def line(self) -> str:
        ratios = self.ratios
        return (
            f"  {self.label:<32} {_us(statistics.median(self.ours)):>10} "
            f"{_us(statistics.median(self.baseline)):>10}   "
            f"{min(ratios):5.2f} {statistics.median(ratios):5.2f} {max(ratios):5.2f}"
        )


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us" if seconds < 0.01 else f"{seconds * 1e3:,.1f} ms"


def _per_call(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def _interleaved(
    label: str,
    ours: Callable[[], object],
    baseline: Callable[[], object],
    rounds: int,
    calls: int,
) -> Row:
    ours(), baseline()  # warm-up (imports, lazy tables), not timed
    mine, theirs = [], []
    for _ in range(rounds):
        theirs.append(_per_call(baseline, calls))
        mine.append(_per_call(ours, calls))
    return Row(label, tuple(mine), tuple(theirs))


def _process(argv: Sequence[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)

    return run


def run(rounds: int = 9) -> list[Row]:
    """Measure every row; raises RuntimeError if either verifier rejects the vector."""
    case = tdx_case(CASE)
    quote, now = case.quote, case.now
    collateral_text = json.dumps(case.collateral_json)

    def ours_cold() -> bool:
        return verify_quote(quote, Collateral.from_json_text(collateral_text), now=now).ok

    def ours_first_sight() -> bool:
        clear_parse_caches()
        return ours_cold()

    verified = VerifiedCollateral.prepare(Collateral.from_json(case.collateral_json))

    def ours_warm() -> bool:
        return verify_quote(quote, verified, now=now).ok

    def qvl_cold() -> str:
        collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)
        return str(dcap_qvl.verify(quote, collateral, now).status)

    qvl_collateral = dcap_qvl.QuoteCollateralV3.from_json(collateral_text)

    def qvl_warm() -> str:
        return str(dcap_qvl.verify(quote, qvl_collateral, now).status)

    if not (ours_cold() and ours_warm() and ours_first_sight()):
        raise RuntimeError(f"our verifier rejects {CASE}; nothing to benchmark")
    if qvl_cold() != "UpToDate" or qvl_warm() != "UpToDate":
        raise RuntimeError(f"dcap-qvl does not report {CASE} UpToDate")

    rows = [
        _interleaved("verify, warm", ours_warm, qvl_warm, rounds, 40),
        _interleaved("verify, cold (running process)", ours_cold, qvl_cold, rounds, 10),
        _interleaved("verify, cold, first sight", ours_first_sight, qvl_cold, rounds, 5),
    ]
    rows.extend(_process_rows(case.directory, now, str(case.expected["mr_td"]), rounds))
    return rows


def _process_rows(directory: Path, now: int, mr_td: str, rounds: int) -> list[Row]:
    quote, collateral = str(directory / "quote.bin"), str(directory / "collateral.json")
    # The installed console script, as users run it (``-m`` when it is not installed).
    script = Path(sys.executable).with_name("shroud-attest")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "attestation.cli"]
    cli += ["verify", quote, "--collateral", collateral, "--at", str(now), "--json"]
    qvl = [sys.executable, "-c", _QVL_PROCESS, quote, collateral, str(now)]
    with tempfile.TemporaryDirectory(prefix="shroud-bench-") as scratch:
        policy_file = Path(scratch) / "policy.toml"
        policy_file.write_text(f'[measurements]\nmr_td = ["{mr_td}"]\n', encoding="utf-8")
        policy = [*cli, "--policy", str(policy_file)]
        # Byte code as an installed package has it (pip compiles on install), kept out of the
        # work tree; PYTHONDONTWRITEBYTECODE would make every start compile from source.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
        ours, with_policy, baseline = (_process(a, env) for a in (cli, policy, qvl))
        with_policy()  # compile the policy parser's byte code too
        return [
            _interleaved("shroud-attest verify --json", ours, baseline, rounds, 1),
            _interleaved("  ... with --policy FILE", with_policy, baseline, rounds, 1),
        ]


def main(argv: list[str] | None = None) -> None:
    """Print the table of ratios against dcap-qvl."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per row")
    args = parser.parse_args(argv)
    rows = run(args.rounds)
    print(f"TDX quote verification, vector {CASE}, {args.rounds} interleaved rounds")
    print(f"  {'':<32} {'ours':>10} {'dcap-qvl':>10}   ours/dcap-qvl: min median max")
    for row in rows:
        print(row.line())
    print("  (provisional on a shared machine: compare ratios, not times)")


if __name__ == "__main__":
    main()
