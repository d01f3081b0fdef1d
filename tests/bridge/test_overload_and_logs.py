"""Overload reporting (counted every time, logged without flooding) and log hygiene (no
exception messages, HTTP client request lines capped), and API keys compared over hashes."""

from __future__ import annotations

import hashlib
import hmac
import logging

import pytest

from bridge import logs
from bridge.dispatch import api_key_digests, authorized
from bridge.metrics import BridgeMetrics
from bridge.overload import OverloadReport
from shroud_sdk.refusals import Overload, OverloadLimit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _metrics() -> BridgeMetrics:
    return BridgeMetrics(["/v1/models"], lambda p: None, provider="simulated", simulated=True)


def _count(metrics: BridgeMetrics, limit: str) -> float:
    value = metrics.registry.get_sample_value(
        "shroud_bridge_overload_refusals_total", {"limit": limit}
    )
    return value or 0.0


def test_every_refusal_is_counted_and_a_flood_is_logged_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics, clock = _metrics(), Clock()
    report = OverloadReport(metrics, interval=10.0, clock=clock)
    busy = Overload(OverloadLimit.HANDSHAKES_PER_SOURCE, 1)
    with caplog.at_level(logging.INFO, logger="bridge.overload"):
        for _ in range(1000):
            report.refused(busy, "192.0.2.9")
        report.refused(Overload(OverloadLimit.SESSIONS), "192.0.2.10")
        clock.now = 10.0
        report.refused(busy, "192.0.2.9")
    assert _count(metrics, "handshakes_per_source") == 1001
    assert _count(metrics, "sessions") == 1
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4, lines
    assert lines[0].startswith("overload: refused handshakes_per_source from 192.0.2.9 (429)")
    assert "999 more 'handshakes_per_source' line(s) suppressed" in lines[2]
    assert lines[3].startswith("overload: refused handshakes_per_source from 192.0.2.9 (429)")
    assert all(r.levelno == logging.INFO for r in caplog.records)


def test_unexpected_errors_are_logged_by_type_and_place_never_by_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def parse() -> None:
        raise KeyError("secret-prompt-text")

    try:
        parse()
    except KeyError as exc:
        with caplog.at_level(logging.ERROR):
            logs.log_unexpected(logging.getLogger("t"), "stream 3 failed", exc)
    text = caplog.text
    assert "KeyError" in text
    assert "parse (test_overload_and_logs.py" in text
    assert "secret-prompt-text" not in text


def test_http_client_request_lines_are_capped_unless_asked_for() -> None:
    try:
        logs.configure(log_request_paths=False)
        assert not logging.getLogger("httpx2").isEnabledFor(logging.INFO)
        assert not logging.getLogger("aiohttp.client").isEnabledFor(logging.INFO)
        assert not logging.getLogger("httpcore").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("websockets.server").isEnabledFor(logging.INFO)
        logs.configure(log_request_paths=True)
        assert logging.getLogger("httpx2").level == logging.NOTSET
    finally:
        for name in (*logs.HTTP_CLIENT_LOGGERS, *logs.PER_CONNECTION_LOGGERS):
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_api_keys_are_compared_as_equal_length_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    keys = api_key_digests(["sk-short-key-0001", "sk-a-much-longer-key-0000000000002"])
    assert keys[0] == hashlib.sha256(b"sk-short-key-0001").digest()
    assert authorized((("authorization", "Bearer sk-a-much-longer-key-0000000000002"),), keys)
    assert not authorized((("authorization", "Bearer sk-short"),), keys)
    # Every configured key compared every time, always 32 bytes against 32 bytes.
    assert compared == [(32, 32)] * 4
