"""Two builds of the wheel from the same source are byte-identical (scripts/build-wheel.sh).

The two source copies differ in everything a build could leak (directory, file times), as two
checkouts of one commit on two machines would. The control builds one copy without
``SOURCE_DATE_EPOCH`` and must differ, so the equality is not an accident of the setup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bridgeproc import REPO_ROOT

pytestmark = pytest.mark.slow

_SOURCES = ("pyproject.toml", "README.md", "scripts/build-wheel.sh")
_PACKAGES = ("attestation", "bridge", "shroud_sdk")


def _copy_source(destination: Path, mtime: int) -> Path:
    for name in _SOURCES:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, destination / name)
    for package in _PACKAGES:
        shutil.copytree(
            REPO_ROOT / package, destination / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    for path in destination.rglob("*"):
        os.utime(path, (mtime, mtime))
    return destination


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}


def _sha256(directory: Path) -> str:
    (wheel,) = directory.glob("shroud_sdk-*.whl")
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def _build(source: Path, out: Path) -> str:
    subprocess.run(
        [str(source / "scripts" / "build-wheel.sh"), sys.executable, str(out)],
        env=_environment(),
        check=True,
        capture_output=True,
        timeout=300,
    )
    return _sha256(out)


def test_two_wheel_builds_have_identical_sha256(tmp_path: Path) -> None:
    first = _copy_source(tmp_path / "checkout-a", 1_700_000_000)
    second = _copy_source(tmp_path / "checkout-b", 1_800_000_000)
    digest = _build(first, tmp_path / "dist-a")
    assert _build(second, tmp_path / "dist-b") == digest

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "."],
        cwd=second,
        env=_environment() | {"PIP_WHEEL_DIR": str(tmp_path / "control")},
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert _sha256(tmp_path / "control") != digest
