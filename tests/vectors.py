"""One place that finds and loads the shared test vectors (real TDX quotes, RFC vectors)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_VECTORS = REPO_ROOT.parent / "shared" / "vectors"
TDX_VECTORS = SHARED_VECTORS / "tdx"
LOCAL_VECTORS = Path(__file__).resolve().parent / "data"

TDX_CASES = (
    "v4-uptodate",
    "v5-uptodate",
    "v4-dstack-eventlog",
    "neg-debug-td",
    "neg-outofdate",
    "neg-no-sept-ve-disable",
)


@dataclass(frozen=True)
class TdxCase:
    """One real quote with its Intel collateral and the independently expected result."""

    name: str
    directory: Path
    quote: bytes
    collateral_json: dict[str, Any]
    expected: dict[str, Any]

    @property
    def now(self) -> int:
        return int(self.expected["now"])

    @property
    def event_log_path(self) -> Path | None:
        path = self.directory / "event_log.json"
        return path if path.exists() else None


def tdx_case(name: str) -> TdxCase:
    directory = TDX_VECTORS / name
    return TdxCase(
        name=name,
        directory=directory,
        quote=(directory / "quote.bin").read_bytes(),
        collateral_json=json.loads((directory / "collateral.json").read_text()),
        expected=json.loads((directory / "expected.json").read_text()),
    )


def intel_root_pem() -> bytes:
    return (TDX_VECTORS / "intel-sgx-root-ca.pem").read_bytes()


def ccel_sample() -> bytes:
    return (TDX_VECTORS / "ccel-sample.bin").read_bytes()


def local_vector(name: str) -> bytes:
    """A vector file shipped in the repository under tests/data (RFC vectors and the like)."""
    return (LOCAL_VECTORS / name).read_bytes()
