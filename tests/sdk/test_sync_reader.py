"""The sync client reads a response body on the caller's own thread (``SyncSession``).

While it waits for its records, the reader runs the session's loop itself: the socket is read
and the record opened on its thread, with no hand-off from the loop thread. Between reads the
loop is idle; the loop thread takes it back as soon as anyone else needs it (a request from
another thread) and after a short grace while the application is away, so the connection is
still served. A real bridge in front of a scripted upstream, on loopback.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import httpx
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

import shroud_sdk
from shroud_sdk import session as session_module
from shroud_sdk.channel.events import DataReceived
from shroud_sdk.session import (
    AsyncStream,
    OutgoingRequest,
    SessionConfig,
    SessionConnectError,
    SyncSession,
)
from tests.bridgeproc import BridgeProcess, running_bridge
from tests.e2e.fake_upstream import FakeUpstream

_ASK: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as running:
        yield running


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream
) -> Iterator[BridgeProcess]:
    with running_bridge(
        tmp_path_factory.mktemp("sync-reader"), upstream=upstream.base_url
    ) as process:
        yield process


def _client(bridge: BridgeProcess, **options: Any) -> shroud_sdk.OpenAI:
    return shroud_sdk.OpenAI(
        bridge_url=bridge.url, api_key="k", policy=bridge.policy_path, max_retries=0, **options
    )


class _ReceivingThreads:
    """Which thread opened each WebSocket message (``_Link.receive``), in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.threads: list[int] = []
        receive = session_module._Link.receive

        def recording(link: Any, message: bytes, text: bool) -> None:
            self.threads.append(threading.get_ident())
            receive(link, message, text)

        monkeypatch.setattr(session_module._Link, "receive", recording)


def _wait_until(condition: Any, what: str) -> None:
    for _ in range(1000):  # a liveness bound (10 s), not a speed requirement
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_a_lone_stream_is_read_on_the_callers_thread(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = _ReceivingThreads(monkeypatch)
    with _client(bridge) as client:
        stream = client.chat.completions.create(model="slow-stream", messages=_ASK, stream=True)
        body_from = len(received.threads)  # the head came in while the request was sent
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text  # the whole answer, read to its authenticated END
    body = received.threads[body_from:]
    # Ten events 100 ms apart: the reader waited for each, running the loop on its thread.
    assert body.count(threading.get_ident()) >= len(body) // 2 > 0


def test_a_request_from_another_thread_runs_while_the_reader_is_away(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The reader leaves the loop idle between reads; with the grace out of reach, only the
    # other request's own claim can get the loop running for it.
    monkeypatch.setattr(session_module, "_IDLE_GRACE", 3600.0)
    with _client(bridge) as client:
        stream = client.chat.completions.create(model="endless", messages=_ASK, stream=True)
        chunks = iter(stream)
        next(chunks)  # the reader ran the loop for this one, and is now away
        listed: list[object] = []
        other = threading.Thread(target=lambda: listed.append(client.models.list()))
        other.start()
        other.join(10)
        assert listed, "a request from another thread waited for the idle reader"
        next(chunks)  # the reader takes the loop back and goes on
        stream.close()
        assert client.models.list().data  # the session is still usable


def test_the_connection_is_served_while_the_reader_is_away(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    received = _ReceivingThreads(monkeypatch)
    with _client(bridge) as client:
        stream = client.chat.completions.create(model="endless", messages=_ASK, stream=True)
        next(iter(stream))
        seen = len(received.threads)
        # Events keep coming every 50 ms: after the grace, the loop thread reads them (into
        # the stream's bounded inbox) though the application reads nothing.
        _wait_until(lambda: len(received.threads) > seen + 2, "records read while away")
        assert threading.get_ident() not in received.threads[seen + 2 :]
        stream.close()


def test_a_body_read_on_the_callers_thread_meets_its_deadline(bridge: BridgeProcess) -> None:
    with _client(bridge, timeout=httpx2.Timeout(10.0, read=0.5)) as client:
        stream = client.chat.completions.create(model="stall", messages=_ASK, stream=True)
        chunks = iter(stream)
        next(chunks)
        # openai 3.x wraps it as APITimeoutError; earlier releases let the legacy httpx's
        # ReadTimeout out of the body.
        with pytest.raises((openai.APITimeoutError, httpx.ReadTimeout)):
            next(chunks)
        stream.close()
        assert client.models.list().data


def test_streams_read_on_two_threads_at_once_both_end(bridge: BridgeProcess) -> None:
    with _client(bridge) as client:
        texts: dict[int, str] = {}

        def read(n: int) -> None:
            stream = client.chat.completions.create(model="slow-stream", messages=_ASK, stream=True)
            texts[n] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        readers = [threading.Thread(target=read, args=(n,)) for n in range(2)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(30)
        assert len(texts) == 2
        assert texts[0] == texts[1] != ""


def test_closing_the_session_fails_a_read_in_progress_and_stops_its_thread(
    bridge: BridgeProcess, no_leaked_threads: None
) -> None:
    client = _client(bridge)
    stream = client.chat.completions.create(model="stall", messages=_ASK, stream=True)
    chunks = iter(stream)
    next(chunks)
    failures: list[BaseException] = []

    def read_on() -> None:
        try:
            next(chunks)
        except Exception as exc:  # what the reader sees when the session closes under it
            failures.append(exc)

    reader = threading.Thread(target=read_on)
    reader.start()
    time.sleep(0.2)  # let the reader take the loop and wait in it (either order is correct)
    client.close()
    reader.join(10)
    assert not reader.is_alive()
    assert failures


def test_a_stale_stop_does_not_leave_a_waiting_caller_without_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With the grace out of reach, only the loop thread's own rule can keep the loop running
    # for a caller whose work a stop meant for nobody (a reader gave up taking the loop)
    # interrupted.
    monkeypatch.setattr(session_module, "_IDLE_GRACE", 3600.0)
    # No connection is made: the verifier is never called.
    session = SyncSession(SessionConfig(url="ws://127.0.0.1:9/", verifier=cast(Any, object())))

    async def stopped_midway() -> str:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.01)
        return "done"

    try:
        assert session.run(stopped_midway(), timeout=5) == "done"
    finally:
        session.close()


def _raw_session(bridge: BridgeProcess) -> SyncSession:
    return SyncSession(
        SessionConfig(
            url=bridge.url,
            verifier=shroud_sdk.AttestationVerifier(bridge.policy),
            audience=bridge.audience,
            allow_simulated=True,
        )
    )


def _chat(model: str) -> OutgoingRequest:
    body = json.dumps({"model": model, "messages": _ASK, "stream": True}).encode()
    headers = (("content-type", "application/json"), ("authorization", "Bearer k"))
    return OutgoingRequest("POST", "/v1/chat/completions", headers, body, {})


def _open(session: SyncSession, model: str) -> AsyncStream:
    async def opened() -> AsyncStream:
        stream = await session.async_session.open_stream(_chat(model), connect_timeout=30)
        assert (await stream.receive_head(10)).status == 200
        return stream

    return session.run(opened(), timeout=30)


def test_an_interrupt_inside_the_readers_loop_run_drops_the_connection(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KeyboardInterrupt lands wherever the main thread is: in a reader running the loop, that
    # may be after a record was opened and before its events were queued. The record is gone
    # and the next one is still authentic, so going on would read a body with a gap (or wait
    # for an END already consumed): the connection must be dropped instead.
    session = _raw_session(bridge)
    try:
        stream = _open(session, "slow-stream")
        body = b"".join(session.receive_body(stream, 10).chunks)
        dispatch = session_module._Link._dispatch
        interrupted: list[bool] = []

        def interrupted_once(link: Any, events: list[Any]) -> None:
            if not interrupted and any(isinstance(e, DataReceived) for e in events):
                interrupted.append(True)
                raise KeyboardInterrupt  # the events were taken from the core: lost
            dispatch(link, events)

        monkeypatch.setattr(session_module._Link, "_dispatch", interrupted_once)

        def read_to_the_end() -> None:
            nonlocal body
            while True:
                part = session.receive_body(stream, 10)
                body += b"".join(part.chunks)
                if part.ended:
                    raise AssertionError(f"read to the END with a gap: {body!r}")

        with pytest.raises(KeyboardInterrupt):
            read_to_the_end()
        with pytest.raises(SessionConnectError):  # the application reads on: a typed failure
            session.receive_body(stream, 10)
        # The session is usable: the next request gets a fresh, verified connection.
        again = _open(session, "slow-stream")
        text = b""
        ended = False
        while not ended:
            part = session.receive_body(again, 10)
            text += b"".join(part.chunks)
            ended = part.ended
        assert b'"9 "' in text
        assert session.handshakes == 2
    finally:
        session.close()


class _InterruptedOnce(threading.Condition):
    """The session's baton, whose first ``wait_for`` on the calling thread is interrupted."""

    def __init__(self, lock: Any, thread: int) -> None:
        super().__init__(lock)
        self._thread = thread
        self.interrupted = False

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        if threading.get_ident() == self._thread and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().wait_for(predicate, timeout)


def test_a_reader_interrupted_while_taking_the_loop_leaves_it_to_the_loop_thread() -> None:
    # No connection is made: the verifier is never called.
    session = SyncSession(SessionConfig(url="ws://127.0.0.1:9/", verifier=cast(Any, object())))
    baton = _InterruptedOnce(session._baton_lock, threading.get_ident())
    session._baton = baton
    try:
        _wait_until(lambda: session._driver == session_module._LOOP_THREAD, "the loop served")
        # Interrupted while the loop thread stops its run for it (Ctrl-C in a reader).
        with pytest.raises(KeyboardInterrupt):
            session._take_loop()
        assert baton.interrupted
        time.sleep(0.2)  # the stop it asked for ends the loop thread's run meanwhile
        # Nobody depends on the loop, nobody runs it: after the grace, the loop thread does.
        ran = threading.Event()
        session._loop.call_soon_threadsafe(ran.set)
        assert ran.wait(5), "the loop was left idle for good"
        # And a reader can take it again.
        _wait_until(session._take_loop, "the loop taken by a reader")
        session._leave_loop()
    finally:
        session.close()


def test_a_reader_interrupted_just_after_taking_the_loop_gives_it_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No connection is made: the verifier is never called.
    session = SyncSession(SessionConfig(url="ws://127.0.0.1:9/", verifier=cast(Any, object())))
    take_loop = SyncSession._take_loop

    def taken_then_interrupted(self: SyncSession) -> bool:
        assert take_loop(self)
        raise KeyboardInterrupt  # Ctrl-C between becoming the driver and driving

    try:
        with monkeypatch.context() as patched:
            patched.setattr(SyncSession, "_take_loop", taken_then_interrupted)
            with pytest.raises(KeyboardInterrupt):
                session.receive_body(cast(AsyncStream, SimpleNamespace(_link=None)), 1)
        assert session.run(asyncio.sleep(0, "served"), timeout=5) == "served"
    finally:
        session.close()


def test_a_reader_hands_the_loop_to_a_caller_that_came_while_it_drove(
    bridge: BridgeProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the grace out of reach, only the reader's hand-back can get the loop running for
    # work that is still waiting when the reader leaves.
    monkeypatch.setattr(session_module, "_IDLE_GRACE", 3600.0)
    session = _raw_session(bridge)
    try:
        stream = _open(session, "endless")
        session.receive_body(stream, 10)  # the reader drives, then leaves the loop idle
        results: list[str] = []

        def caller() -> None:
            results.append(session.run(asyncio.sleep(0.5, "done"), timeout=10))

        # The caller comes while the reader drives for its next record (50 ms away).
        driving = threading.Event()
        receive = session_module._StreamInbox.take_driving

        def signalled(inbox: Any, read_timeout: float | None) -> Any:
            driving.set()
            return receive(inbox, read_timeout)

        monkeypatch.setattr(session_module._StreamInbox, "take_driving", signalled)

        def comes_while_driving() -> None:
            driving.wait(5)
            caller()

        other = threading.Thread(target=comes_while_driving)
        other.start()
        session.receive_body(stream, 10)
        other.join(10)
        assert results == ["done"]
        session.run(stream.aclose(), timeout=5)
    finally:
        session.close()
