"""Metrics: names in the exposition, label values confined to fixed sets, a real scrape."""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from bridge import metrics as metrics_module
from bridge.config import BridgeConfig, parse_args
from bridge.metrics import (
    MAX_SCRAPES,
    OTHER,
    BridgeMetrics,
    Direction,
    ErrorKind,
    HandshakeFailure,
    QuotePurpose,
    RotationResult,
    StreamOutcome,
    status_label,
)

SECRET_PROMPT = "my diagnosis is confidential"
SECRET_KEY = "sk-live-0123456789abcdef"


def _config() -> BridgeConfig:
    return parse_args(["--quote-provider", "simulated", "--api-key", SECRET_KEY], environ={})


def _metrics(config: BridgeConfig | None = None) -> BridgeMetrics:
    config = config or _config()
    return BridgeMetrics(
        config.allowed_paths, config.match_allowed_path, provider="simulated", simulated=True
    )


def _exercise(metrics: BridgeMetrics, path: str) -> None:
    metrics.handshake_ok(0.02)
    metrics.quote_generated(QuotePurpose.FRESH, 0.02)
    metrics.rotation(RotationResult.OK, 1_800_000_000)
    metrics.handshake_failed(HandshakeFailure.WRONG_AUDIENCE)
    metrics.sessions_active.inc()
    metrics.stream_finished(path, StreamOutcome.COMPLETED)
    metrics.upstream_responded(path, 0.3, 200)
    metrics.response_sent(path, 404)
    metrics.error(ErrorKind.RECORD_AUTH)
    metrics.record(Direction.BRIDGE_TO_CLIENT, 512)


def _label_values(exposition: bytes) -> set[str]:
    values: set[str] = set()
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            # "le" is the histogram bucket bound: a number fixed in bridge.metrics.
            values.update(v for k, v in sample.labels.items() if k != "le")
    return values


def test_exposition_has_the_documented_metric_names() -> None:
    metrics = _metrics()
    _exercise(metrics, "/v1/chat/completions")
    text, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(text.decode())}
    assert {
        "shroud_bridge_info",
        "shroud_bridge_handshakes",
        "shroud_bridge_handshake_seconds",
        "shroud_bridge_quotes_generated",
        "shroud_bridge_quote_generation_seconds",
        "shroud_bridge_evidence_rotations",
        "shroud_bridge_evidence_expiry_timestamp_seconds",
        "shroud_bridge_handshakes_in_progress",
        "shroud_bridge_sessions_active",
        "shroud_bridge_streams",
        "shroud_bridge_streams_active",
        "shroud_bridge_upstream_response_seconds",
        "shroud_bridge_responses",
        "shroud_bridge_errors",
        "shroud_bridge_records",
        "shroud_bridge_record_bytes",
    } <= names
    assert b'shroud_bridge_handshakes_total{reason="wrong_audience",result="failed"} 1.0' in text
    assert b'shroud_bridge_responses_total{path="/v1/chat/completions",status="200"} 1.0' in text
    assert b'shroud_bridge_info{quote_provider="simulated",simulated="true"} 1.0' in text
    assert b'shroud_bridge_quotes_generated_total{purpose="fresh"} 1.0' in text


def test_registry_is_private_to_each_instance() -> None:
    a, b = _metrics(), _metrics()
    a.error(ErrorKind.INTERNAL)
    assert b'kind="internal"' not in b.render()[0]


def test_path_outside_allowlist_is_reported_as_other_not_verbatim() -> None:
    metrics = _metrics()
    path = f"/v1/chat/completions/{SECRET_PROMPT.replace(' ', '-')}"
    _exercise(metrics, path)
    _exercise(metrics, f"/v1/{SECRET_PROMPT}")
    text = metrics.render()[0]
    assert b"confidential" not in text
    assert OTHER in _label_values(text)


def test_model_id_in_path_is_reported_as_the_wildcard_entry() -> None:
    metrics = _metrics()
    metrics.response_sent("/v1/models/private-finetune-for-client-x", 200)
    text = metrics.render()[0]
    assert b"private-finetune" not in text
    assert b'path="/v1/models/*"' in text


def test_buggy_matcher_cannot_smuggle_text_into_labels() -> None:
    config = _config()
    metrics = BridgeMetrics(
        config.allowed_paths, lambda path: path, provider="simulated", simulated=True
    )
    metrics.response_sent(SECRET_PROMPT, 200)
    assert b"confidential" not in metrics.render()[0]


def test_free_text_reason_is_refused() -> None:
    metrics = _metrics()
    with pytest.raises(ValueError, match="is not a valid"):
        metrics.handshake_failed(SECRET_PROMPT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not a valid"):
        metrics.error(SECRET_PROMPT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not a valid"):
        metrics.stream_finished("/v1/models", SECRET_PROMPT)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not a valid"):
        metrics.record(SECRET_PROMPT, 1)  # type: ignore[arg-type]
    assert b"confidential" not in metrics.render()[0]


@pytest.mark.parametrize(
    ("status", "label"), [(200, "200"), (599, "599"), (99, OTHER), (600, OTHER)]
)
def test_status_codes_outside_http_range_are_other(status: int, label: str) -> None:
    assert status_label(status) == label


def test_no_key_appears_in_metrics() -> None:
    metrics = _metrics()
    _exercise(metrics, "/v1/models")
    assert SECRET_KEY.encode() not in metrics.render()[0]


_ALLOWED_LABELS = (
    {e.value for e in HandshakeFailure}
    | {e.value for e in ErrorKind}
    | {e.value for e in StreamOutcome}
    | {e.value for e in Direction}
    | {str(s) for s in range(100, 600)}
    | set(_config().allowed_paths)
    | {OTHER, "ok", "failed", "", "simulated", "true"}
)


@settings(max_examples=60, deadline=None)
@given(path=st.text(max_size=80), status=st.integers(-1000, 1000))
def test_every_label_value_is_from_a_fixed_set(path: str, status: int) -> None:
    metrics = _metrics()
    metrics.stream_finished(path, StreamOutcome.CLIENT_RESET)
    metrics.upstream_responded("/v1/" + path, 1.0, status)
    metrics.response_sent(path, status)
    assert _label_values(metrics.render()[0]) <= _ALLOWED_LABELS


def test_metrics_endpoint_serves_a_real_scrape() -> None:
    metrics = _metrics()
    _exercise(metrics, "/v1/embeddings")
    server, thread = metrics.serve("127.0.0.1", 0)
    try:
        port = server.server_address[1]
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert 'shroud_bridge_streams_total{outcome="completed",path="/v1/embeddings"} 1.0' in (
            response.text
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_metrics_server_serves_a_bounded_number_of_connections_each_with_a_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(metrics_module._QuietHandler, "timeout", 2.0)
    server, thread = _metrics().serve("127.0.0.1", 0)
    address = ("127.0.0.1", server.server_port)
    idle = [socket.create_connection(address) for _ in range(MAX_SCRAPES)]
    try:
        for sock in idle:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the rest
        time.sleep(0.2)
        with socket.create_connection(address) as extra:
            extra.settimeout(1.0)  # well before the timeout would close it
            assert extra.recv(1024) == b""  # closed on accept: every slot is taken
        for sock in idle:  # each is dropped at its timeout, unanswered
            sock.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert sock.recv(1024) == b""
        scrape = httpx.get(f"http://{address[0]}:{address[1]}/metrics", timeout=5)
        assert scrape.status_code == 200  # the slots are free again
    finally:
        for sock in idle:
            sock.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_connections_reset_mid_scrape_log_a_throttled_line_and_no_traceback(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    server, thread = _metrics().serve("127.0.0.1", 0)
    address = ("127.0.0.1", server.server_port)
    try:
        with caplog.at_level(logging.INFO, logger="bridge.metrics"):
            for _ in range(20):
                with socket.create_connection(address) as sock:
                    sock.sendall(b"GET /metrics HTTP/1.1\r\n")
                    time.sleep(0.02)  # the scrape thread is reading the headers
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            scrape = httpx.get(f"http://{address[0]}:{address[1]}/metrics", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert scrape.status_code == 200
    # socketserver printed a 30-line traceback to stderr for each of these.
    assert "Traceback" not in capfd.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.metrics"]
    assert lines == ["metrics connection from 127.0.0.1 failed: ConnectionResetError"] * 5
