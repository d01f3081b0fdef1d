"""The clients follow whichever openai is installed (1.55.3 through 3.x).

`make test` runs tests/sdk under three openai releases (the newest 3.x, the newest 2.x and the
lower bound); these tests pin down what differs between them.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import httpx
import httpx2
import openai
import pytest

import shroud_sdk
from shroud_sdk.client import OPENAI_USES_HTTPX2
from tests.bridgeproc import BridgeProcess
from tests.vectors import REPO_ROOT


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_lower_bound_in_pyproject_is_the_release_make_tests() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (spec,) = [d for d in project["dependencies"] if d.startswith("openai")]
    declared = re.search(r">=([\d.]+)", spec)
    tested = re.search(
        r"^OPENAI_LOWER_BOUND := ([\d.]+)$", (REPO_ROOT / "Makefile").read_text(), re.M
    )
    assert declared is not None
    assert tested is not None
    assert declared.group(1) == tested.group(1)
    assert "<4" in spec


def test_installed_openai_is_a_supported_release() -> None:
    assert (1, 55, 3) <= _version(metadata.version("openai")) < (4,)


def test_clients_are_the_installed_openai_on_its_own_httpx(bridge: BridgeProcess) -> None:
    flavour = httpx2 if OPENAI_USES_HTTPX2 else httpx
    assert (_version(openai.__version__) >= (3,)) == OPENAI_USES_HTTPX2
    with shroud_sdk.OpenAI(bridge_url=bridge.url, policy=bridge.policy_path) as client:
        assert isinstance(client, openai.OpenAI)
        assert isinstance(client.http_client, flavour.Client)
        expected = (
            shroud_sdk.ShroudTransport if OPENAI_USES_HTTPX2 else shroud_sdk.LegacyShroudTransport
        )
        assert type(client.transport) is expected
        assert client.models.list().data


@pytest.mark.parametrize("timeout_cls", [httpx.Timeout, httpx2.Timeout], ids=["httpx", "httpx2"])
def test_a_timeout_of_either_httpx_is_accepted(bridge: BridgeProcess, timeout_cls: type) -> None:
    timeout = timeout_cls(7.0, connect=3.0)
    with shroud_sdk.OpenAI(bridge_url=bridge.url, policy=bridge.policy_path, timeout=timeout) as c:
        native = c.http_client.timeout
        assert (native.connect, native.read) == (3.0, 7.0)
        assert c.models.list().data
