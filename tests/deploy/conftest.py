"""Fixtures for the deployment tests: one test CA, and a fleet of three bridges behind nginx.

Tests that stop or kill bridges start their own fleet (``tests.deploy.fleet.running_fleet``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from attestation.policy import Policy
from tests.deploy.fleet import Fleet, running_fleet
from tests.deploy.nginx import require_nginx
from tests.deploy.tls import DeployPki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DeployPki:
    """A test CA and a certificate for localhost / 127.0.0.1."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, pki: DeployPki) -> Iterator[Fleet]:
    """Three bridges of one image behind nginx, shared by a test module (never stopped)."""
    require_nginx()
    with running_fleet(tmp_path_factory.mktemp("fleet"), pki) as running:
        yield running


@pytest.fixture(scope="module")
def published_policy(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Policy:
    """The policy the operator drafted from one bridge's evidence (policy init --bridge)."""
    return fleet.publish_policy(tmp_path_factory.mktemp("release") / "policy.toml")
