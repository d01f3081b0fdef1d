"""Run the distribution's nginx, with the shipped ``deploy/nginx/shroud-bridge.conf``, in tests.

``running_nginx(backends, pki, ...)`` renders the shipped site file with this test's ports,
certificate and ``proxy_read_timeout`` (every substitution must match exactly once, so the
tested file is the documented one), wraps it in a minimal ``nginx.conf`` whose pid file, logs
and temporary paths all live in a private directory, and runs ``nginx -g 'daemon off;'`` as a
child process. It is never the system service: no file outside that directory is written, no
privileged port is used, and when the tests run as root nginx runs as ``nobody``.

The proxy adds ``X-Real-IP`` and ``X-Forwarded-For`` (the shipped file does), so a test of the
bridge's trusted-proxy handling only has to start its bridges with the matching flags.

Where nginx is not installed, :func:`require_nginx` skips with a one-line reason naming the
Debian package; under CI (``CI`` set) it fails instead, since ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from tests.bridgeproc import REPO_ROOT, free_port
from tests.deploy.tls import DeployPki

SHIPPED_SITE = REPO_ROOT / "deploy" / "nginx" / "shroud-bridge.conf"
NGINX_PACKAGE = "nginx"
_CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")


def nginx_binary() -> str | None:
    """The nginx executable, or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((c for c in _CANDIDATES if os.access(c, os.X_OK)), None)


def require_nginx() -> str:
    """The nginx executable; skip the test (fail it under CI) when there is none."""
    binary = nginx_binary()
    if binary is not None:
        return binary
    reason = f"nginx is not installed (Debian package '{NGINX_PACKAGE}'; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the deployment tests: {reason}")
    pytest.skip(reason)


def _replace_once(text: str, pattern: str, replacement: str, what: str) -> str:
    rendered, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise AssertionError(
            f"{SHIPPED_SITE.name}: expected exactly one {what} ({pattern!r}), found {count}; "
            "update tests/deploy/nginx.py together with the shipped file"
        )
    return rendered


def render_site(
    backends: Sequence[str],
    *,
    listen_port: int,
    pki: DeployPki,
    read_timeout: str,
    fail_timeout: str,
) -> str:
    """The shipped site file with this test's upstreams, listener, certificate and timeout."""
    text = SHIPPED_SITE.read_text(encoding="utf-8")
    servers = "\n".join(
        f"    server {b} max_fails=1 fail_timeout={fail_timeout};" for b in backends
    )
    text = _replace_once(
        text,
        r"^upstream shroud_bridges \{\n(?:.*\n)*?\}",
        f"upstream shroud_bridges {{\n{servers}\n}}",
        "upstream block",
    )
    text = _replace_once(
        text, r"^    listen 443 ssl;", f"    listen 127.0.0.1:{listen_port} ssl;", "listen"
    )
    text = _replace_once(
        text, r"^    server_name \S+;", "    server_name localhost;", "server_name"
    )
    text = _replace_once(
        text,
        r"^    ssl_certificate +\S+;",
        f"    ssl_certificate {pki.server_cert};",
        "ssl_certificate",
    )
    text = _replace_once(
        text,
        r"^    ssl_certificate_key +\S+;",
        f"    ssl_certificate_key {pki.server_key};",
        "ssl_certificate_key",
    )
    return _replace_once(
        text,
        r"^        proxy_read_timeout \S+;",
        f"        proxy_read_timeout {read_timeout};",
        "proxy_read_timeout",
    )


_MAIN_CONF = """\
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 512; }}
http {{
    log_format shroud '$remote_addr "$request" $status upstream=$upstream_addr';
    access_log {dir}/access.log shroud;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include {dir}/shroud-bridge.conf;
}}
"""


@dataclass
class NginxProxy:
    """A running nginx: ``url`` is the ``wss://`` address clients use."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    pki: DeployPki

    @property
    def url(self) -> str:
        return f"wss://localhost:{self.port}/"

    @property
    def audience(self) -> str:
        """The public name every bridge behind this proxy must be started with."""
        return f"localhost:{self.port}"

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.directory / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` when running as root, so nginx never runs privileged."""
    if os.geteuid() != 0:
        return None
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _wait_ready(proxy: NginxProxy, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    context = proxy.pki.client_context()
    while time.monotonic() < deadline:
        if proxy.process.poll() is not None:
            raise RuntimeError(
                f"nginx exited with {proxy.process.returncode}:\n{proxy.error_log()}"
            )
        with contextlib.suppress(OSError, httpx2.HTTPError):
            socket.create_connection(("127.0.0.1", proxy.port), 1).close()
            url = f"https://localhost:{proxy.port}/healthz"
            httpx2.get(url, verify=context, timeout=2.0, trust_env=False)
            return  # nginx answered over TLS (whatever the bridges said)
        time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"nginx not ready after {timeout}s:\n{proxy.error_log()[-4000:]}")


@contextlib.contextmanager
def running_nginx(
    backends: Sequence[str],
    pki: DeployPki,
    *,
    read_timeout: str = "120s",
    fail_timeout: str = "10s",
    startup_timeout: float = 20.0,
    port: int | None = None,
) -> Iterator[NginxProxy]:
    """nginx terminating TLS on 127.0.0.1:``port`` (default: a free one) for ``backends``."""
    binary = require_nginx()
    # Not the test's tmp_path: when we are root, nginx runs as nobody and must reach its files.
    directory = Path(tempfile.mkdtemp(prefix="shroud-nginx-"))
    try:
        local_pki = DeployPki(
            ca_cert=pki.ca_cert,
            server_cert=Path(shutil.copy(pki.server_cert, directory / "server-chain.pem")),
            server_key=Path(shutil.copy(pki.server_key, directory / "server-key.pem")),
        )
        port = port or free_port()
        site = render_site(
            backends,
            listen_port=port,
            pki=local_pki,
            read_timeout=read_timeout,
            fail_timeout=fail_timeout,
        )
        (directory / "shroud-bridge.conf").write_text(site, encoding="utf-8")
        (directory / "nginx.conf").write_text(_MAIN_CONF.format(dir=directory), encoding="utf-8")
        (directory / "temp").mkdir()
        owner = _unprivileged()
        if owner is not None:
            for path in (directory, *directory.rglob("*")):
                os.chown(path, *owner)
        command = [
            binary,
            "-p",
            str(directory),
            "-c",
            str(directory / "nginx.conf"),
            "-e",
            str(directory / "error.log"),
            "-g",
            "daemon off;",
        ]
        with (directory / "stderr.log").open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=directory,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                user=owner[0] if owner else None,
                group=owner[1] if owner else None,
                extra_groups=[] if owner else None,
            )
        proxy = NginxProxy(port=port, directory=directory, process=process, pki=pki)
        try:
            _wait_ready(proxy, startup_timeout)
            yield proxy
        finally:
            proxy.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
