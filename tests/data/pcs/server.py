"""A local HTTP server that replays the recorded PCS/PCCS responses in this directory.

It listens on 127.0.0.1 only and serves the v4 paths a ``CollateralFetcher`` requests, plus
Intel's root CA CRL distribution point path, from one recorded case at a time. Tests can
replace any path's answer (status, body, headers, delay) to simulate a broken or hostile
service, and read back every request it received.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.data.pcs.build_recordings import recorded_files

HERE = Path(__file__).resolve().parent

PATH_TCB = "/tdx/certification/v4/tcb"
PATH_QE_IDENTITY = "/tdx/certification/v4/qe/identity"
PATH_PCK_CRL = "/sgx/certification/v4/pckcrl"
PATH_PCCS_ROOT_CA_CRL = "/sgx/certification/v4/rootcacrl"
PATH_ROOT_CA_CRL_DER = "/IntelSGXRootCA.der"  # Intel's CDP path, served locally


@dataclass
class Reply:
    """One canned answer. ``content_length=False`` streams the body with no length header."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_length: bool = True
    drip: float = 0.0  # when set, the body is sent one byte at a time with this pause


class RecordedPcs:
    """State shared with the handler threads: the active case, overrides, the request log."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.case = "v4-uptodate"
        self.overrides: dict[str, Reply] = {}
        self.requests: list[str] = []  # path?query of every request, in arrival order
        self.served: dict[str, bytes] | None = None  # replaces the recorded case when set
        self._lock = threading.Lock()

    @property
    def root_ca_crl_url(self) -> str:
        return self.url + PATH_ROOT_CA_CRL_DER

    def serve_collateral(self, collateral_json: Mapping[str, str]) -> None:
        """Answer with this collateral (e.g. a simulated platform's) in PCS's shapes."""
        self.served = recorded_files(collateral_json)

    def recorded(self, name: str) -> bytes:
        if self.served is not None:
            return self.served[name]
        return (HERE / self.case / name).read_bytes()

    def recorded_headers(self, endpoint: str) -> dict[str, str]:
        headers: dict[str, dict[str, str]] = json.loads(self.recorded("headers.json"))
        return dict(headers[endpoint])

    def fmspc(self) -> str:
        """The FMSPC (upper-case hex) of the TCB Info being served."""
        return str(json.loads(self.recorded("tcb.json"))["tcbInfo"]["fmspc"]).upper()

    def log(self, target: str) -> None:
        with self._lock:
            self.requests.append(target)

    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def reply_for(self, target: str) -> Reply:
        parts = urlsplit(target)
        if parts.path in self.overrides:
            return self.overrides[parts.path]
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path == PATH_TCB:
            if query.get("fmspc") != self.fmspc():
                return Reply(404, headers={"Error-Code": "NotFound"})
            return Reply(200, self.recorded("tcb.json"), self.recorded_headers("tcb"))
        if parts.path == PATH_QE_IDENTITY:
            return Reply(
                200, self.recorded("qe_identity.json"), self.recorded_headers("qe_identity")
            )
        if parts.path == PATH_PCK_CRL:
            # Every recorded case's PCK chain is issued by the Platform CA.
            if query.get("ca") != "platform" or query.get("encoding") != "der":
                return Reply(400, headers={"Error-Code": "InvalidRequestSyntax"})
            return Reply(200, self.recorded("pckcrl.der"), self.recorded_headers("pckcrl"))
        if parts.path == PATH_PCCS_ROOT_CA_CRL:
            return Reply(200, self.recorded("rootcacrl.hex"))
        if parts.path == PATH_ROOT_CA_CRL_DER:
            return Reply(200, self.recorded("rootcacrl.der"))
        return Reply(404)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes
    server: _Server

    def do_GET(self) -> None:
        state = self.server.state
        state.log(self.path)
        reply = state.reply_for(self.path)
        if reply.delay:
            time.sleep(reply.delay)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.content_length:
            self.send_header("Content-Length", str(len(reply.body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        # The client may give up (size limit, timeout): that is what is being tested.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if reply.drip:
                for i in range(len(reply.body)):
                    self.wfile.write(reply.body[i : i + 1])
                    time.sleep(reply.drip)
            else:
                self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: RecordedPcs


@contextmanager
def serve_recorded_pcs() -> Iterator[RecordedPcs]:
    """Run the server on an ephemeral 127.0.0.1 port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    host, port = server.server_address[:2]
    server.state = RecordedPcs(f"http://{host!s}:{port}")
    # A short poll interval keeps shutdown (and so each test's teardown) fast.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
