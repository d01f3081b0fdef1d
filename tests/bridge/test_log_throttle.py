"""The log throttle: the first lines of each kind pass, the rest are counted into one exact
summary, and a new interval starts the count again."""

from __future__ import annotations

import logging
import threading
from enum import Enum

import pytest

from bridge.log_throttle import PEER_EVENTS, LogKind, LogThrottle

_log = logging.getLogger("tests.log_throttle")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Kind(Enum):
    REFUSED = "refused"
    FAILED = "failed"


def _flood(throttle: LogThrottle, kind: Enum, count: int, source: str = "192.0.2.7") -> int:
    return sum(
        throttle.log(_log, kind, logging.INFO, "refused %s (%d)", source, n) for n in range(count)
    )


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == _log.name]


def test_the_first_lines_of_a_kind_pass_and_the_rest_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(lines=3, interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger=_log.name):
        logged = _flood(throttle, Kind.REFUSED, 1000)
    assert logged == 3
    assert _messages(caplog) == [f"refused 192.0.2.7 ({n})" for n in range(3)]
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert throttle.suppressed(Kind.REFUSED) == 997


def test_the_summary_counts_exactly_what_was_suppressed_then_the_next_line_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(lines=2, interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger=_log.name):
        _flood(throttle, Kind.REFUSED, 500)
        clock.now += 10.0
        assert throttle.log(_log, Kind.REFUSED, logging.INFO, "refused again")
    lines = _messages(caplog)
    assert len(lines) == 4, lines
    assert lines[2] == (
        "log throttle: 498 more 'refused' line(s) suppressed (at most 2 per 10 s; "
        "the metrics count every event)"
    )
    assert lines[3] == "refused again"
    assert caplog.records[2].levelno == logging.INFO  # the level of the lines it stands for
    assert throttle.suppressed(Kind.REFUSED) == 0


def test_a_new_interval_passes_lines_again_and_counts_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    throttle = LogThrottle(lines=2, interval=10.0, clock=clock)
    with caplog.at_level(logging.INFO, logger=_log.name):
        assert _flood(throttle, Kind.REFUSED, 5) == 2
        clock.now += 9.9
        assert _flood(throttle, Kind.REFUSED, 5) == 0  # still the first interval
        clock.now += 0.1
        assert _flood(throttle, Kind.REFUSED, 5) == 2  # a new one: its own two lines
        clock.now += 10.0
        throttle.log(_log, Kind.REFUSED, logging.INFO, "later")
    summaries = [m for m in _messages(caplog) if m.startswith("log throttle:")]
    assert [s.split(" more")[0] for s in summaries] == ["log throttle: 8", "log throttle: 3"]


def test_kinds_are_throttled_apart(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(lines=1, interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger=_log.name):
        _flood(throttle, Kind.REFUSED, 100)
        assert throttle.log(_log, Kind.FAILED, logging.WARNING, "failed")  # not drowned
    assert _messages(caplog) == ["refused 192.0.2.7 (0)", "failed"]


def test_flush_reports_what_is_owed_once(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(lines=1, interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger=_log.name):
        _flood(throttle, Kind.REFUSED, 10)
        _flood(throttle, Kind.FAILED, 1)  # nothing suppressed: no summary
        throttle.flush()
        throttle.flush()
    lines = _messages(caplog)
    assert len(lines) == 3, lines
    assert lines[2].startswith("log throttle: 9 more 'refused' line(s) suppressed")


def test_the_summary_names_the_kind_only_never_what_the_peer_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttle = LogThrottle(lines=1, interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger=_log.name):
        for n in range(50):  # many sources, one kind: one window, not one per source
            throttle.log(_log, LogKind.HANDSHAKE_REFUSED, logging.INFO, "from %s", f"10.0.0.{n}")
        throttle.flush()
    summary = _messages(caplog)[-1]
    assert summary.startswith("log throttle: 49 more 'handshake refused' line(s)")
    assert "10.0.0." not in summary


def test_a_level_that_is_not_logged_spends_no_lines(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(lines=1, interval=10.0, clock=Clock())
    with caplog.at_level(logging.INFO, logger=_log.name):
        for _ in range(10):
            assert not throttle.log(_log, Kind.REFUSED, logging.DEBUG, "debug detail")
        assert throttle.log(_log, Kind.REFUSED, logging.INFO, "seen")
    assert _messages(caplog) == ["seen"]
    assert throttle.suppressed(Kind.REFUSED) == 0


def test_lines_from_several_threads_are_all_counted(caplog: pytest.LogCaptureFixture) -> None:
    # A quote's collateral failure is logged from a worker thread, the rest from the loop's.
    throttle = LogThrottle(lines=5, interval=3600.0)
    with caplog.at_level(logging.INFO, logger=_log.name):
        workers = [
            threading.Thread(target=_flood, args=(throttle, Kind.REFUSED, 5000)) for _ in range(4)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        throttle.flush()
    lines = _messages(caplog)
    assert len(lines) == 6
    assert lines[-1].startswith("log throttle: 19995 more")


def test_reset_forgets_every_window(caplog: pytest.LogCaptureFixture) -> None:
    throttle = LogThrottle(lines=1, interval=10.0, clock=Clock())
    _flood(throttle, Kind.REFUSED, 3)
    throttle.reset()
    assert throttle.suppressed(Kind.REFUSED) == 0
    with caplog.at_level(logging.INFO, logger=_log.name):
        assert throttle.log(_log, Kind.REFUSED, logging.INFO, "first again")


@pytest.mark.parametrize(("lines", "interval"), [(0, 10.0), (1, 0.0)])
def test_a_throttle_that_would_pass_nothing_is_refused(lines: int, interval: float) -> None:
    with pytest.raises(ValueError, match="at least one line"):
        LogThrottle(lines=lines, interval=interval)


def test_the_process_throttle_passes_a_handful_per_ten_seconds() -> None:
    # The documented numbers (docs/deployment.md, "Logs").
    passed = sum(
        PEER_EVENTS.log(_log, LogKind.CONNECTION_FAILED, logging.WARNING, "x") for _ in range(50)
    )
    assert passed == 5
