"""Test-session header: the versions the SDK is tested against in this run."""

from __future__ import annotations

from importlib import metadata

import pytest

from bridge.log_throttle import PEER_EVENTS

# openai, the httpx packages it may build on, and the frameworks tests/integrations drives.
_REPORTED = (
    "openai",
    "httpx",
    "httpx2",
    "langchain-openai",
    "langchain-core",
    "llama-index-core",
    "llama-index-llms-openai",
    "llama-index-llms-openai-like",
    "pydantic-ai-slim",
    "litellm",
)


def pytest_report_header(config: pytest.Config) -> str:
    versions = []
    for name in _REPORTED:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "shroud-sdk tested with: " + ", ".join(versions)


@pytest.fixture(autouse=True)
def _fresh_log_throttle() -> None:
    """Each test's in-process bridge logs its first lines of each kind, as a fresh process
    would (the throttle is process-wide)."""
    PEER_EVENTS.reset()
