"""The deployment tests' own rules: skip without nginx (naming the package), never under CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import nginx
from tests.deploy.tls import DeployPki


def test_missing_nginx_skips_with_the_package_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx, "nginx_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        nginx.require_nginx()
    reason = str(skipped.value)
    assert "Debian package 'nginx'" in reason
    assert "\n" not in reason


def test_missing_nginx_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nginx, "nginx_binary", lambda: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the deployment tests"):
        nginx.require_nginx()


def test_rendering_refuses_a_shipped_site_that_drifted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    drifted = tmp_path / "site.conf"
    drifted.write_text(nginx.SHIPPED_SITE.read_text().replace("proxy_read_timeout", "# was"))
    monkeypatch.setattr(nginx, "SHIPPED_SITE", drifted)
    with pytest.raises(AssertionError, match="proxy_read_timeout"):
        nginx.render_site(
            ["127.0.0.1:1"],
            listen_port=2,
            pki=DeployPki(tmp_path / "ca", tmp_path / "chain", tmp_path / "key"),
            read_timeout="1s",
            fail_timeout="1s",
        )
