"""The SDK's per-stream inbox and body reads: batches, the unread bound, deadlines, threads.

The reader (on the session's loop) queues a stream's records; the application takes all that
arrived in one hand-off, on the loop (async) or on its own thread (sync). These tests drive
the inbox directly, with no socket: the bound on unread records, which includes a batch the
application holds, is what keeps an unread response in the network (the end-to-end tests
in ``test_overload.py`` show the bridge's send timeout then firing).
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest

from shroud_sdk.channel.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from shroud_sdk.session import AsyncStream, SessionTimeoutError, StreamAbortedError, _StreamInbox


def _data(n: int) -> DataReceived:
    return DataReceived(1, b"chunk %d" % n)


async def _settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def _stream(inbox: _StreamInbox) -> AsyncStream:
    return AsyncStream(cast(Any, SimpleNamespace(report=None)), 1, inbox)


async def test_one_take_returns_every_record_that_arrived() -> None:
    inbox = _StreamInbox()
    for n in range(3):
        await inbox.put(_data(n))
    assert await inbox.take(1) == [_data(0), _data(1), _data(2)]


async def test_a_batch_counts_as_unread_until_the_application_asks_for_more() -> None:
    inbox = _StreamInbox(limit=4)
    for n in range(4):
        await inbox.put(_data(n))
    assert len(await inbox.take(1)) == 4
    assert len(inbox) == 4  # handed out, not yet read: still within the bound
    blocked = asyncio.ensure_future(inbox.put(_data(4)))
    await _settled()
    assert not blocked.done()  # the reader waits: nothing more is read off the socket
    taking = asyncio.ensure_future(inbox.take(5))  # "the last batch was read"
    await asyncio.wait_for(blocked, 5)
    assert await asyncio.wait_for(taking, 5) == [_data(4)]


async def test_a_read_without_records_meets_its_deadline() -> None:
    inbox = _StreamInbox()
    with pytest.raises(SessionTimeoutError) as caught:
        await inbox.take(0.05)
    assert caught.value.phase == "read"
    with pytest.raises(SessionTimeoutError):
        await asyncio.to_thread(inbox.take_blocking, 0.05)


async def test_a_thread_reads_records_and_failures_without_the_loop() -> None:
    inbox = _StreamInbox(limit=2)
    batches: list[list[object]] = []
    errors: list[BaseException] = []

    def application() -> None:
        try:
            for _ in range(3):
                batches.append(list(inbox.take_blocking(10)))
        except BaseException as exc:  # the test reads it below
            errors.append(exc)

    thread = threading.Thread(target=application)
    thread.start()
    failure = StreamAbortedError(1, "gone")

    async def reader() -> None:
        for n in range(5):  # more than the limit: the thread's takes make room
            await inbox.put(_data(n))
        inbox.fail(failure)

    await asyncio.wait_for(reader(), 10)
    await asyncio.to_thread(thread.join, 10)
    assert not errors
    received = [item for batch in batches for item in batch]
    assert received == [*map(_data, range(5)), failure]
    assert all(len(batch) <= 3 for batch in batches)  # at most the limit, plus the error


async def test_a_discarded_stream_frees_its_waiting_reader() -> None:
    inbox = _StreamInbox(limit=1)
    await inbox.put(_data(0))
    blocked = asyncio.ensure_future(inbox.put(_data(1)))
    await _settled()
    inbox.discard()
    await asyncio.wait_for(blocked, 5)
    assert len(inbox) == 0


async def test_data_before_a_reset_in_one_batch_is_delivered_then_the_reset_raised() -> None:
    inbox = _StreamInbox()
    stream = _stream(inbox)
    await inbox.put(ResponseReceived(1, 200, ()))
    await inbox.put(_data(0))
    await inbox.put(StreamReset(1, 2, "upstream failed"))
    assert (await stream.receive_head(1)).status == 200
    part = await stream.receive_body(1)
    assert (part.chunks, part.ended) == ([b"chunk 0"], False)
    with pytest.raises(StreamAbortedError):
        await stream.receive_body(1)
    assert stream.finished


async def test_a_body_read_on_a_thread_ends_at_the_authenticated_end() -> None:
    inbox = _StreamInbox()
    stream = _stream(inbox)
    for event in (ResponseReceived(1, 200, ()), _data(0), _data(1), StreamEnded(1, None)):
        await inbox.put(event)
    await stream.receive_head(1)
    part = await asyncio.to_thread(stream.receive_body_blocking, 1)
    assert (part.chunks, part.ended) == ([b"chunk 0", b"chunk 1"], True)
    assert stream.finished
    assert (await stream.receive_body(1)).ended


class _HeldLoop:
    """A loop this thread holds but does not run: the sync reader's position before
    ``take_driving`` (which runs it on the reader's own thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def inbox(self) -> _StreamInbox:
        async def made() -> _StreamInbox:
            return _StreamInbox()  # bound to the running loop, as the session makes it

        return self.loop.run_until_complete(made())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def held() -> Any:
    held = _HeldLoop()
    yield held
    held.close()


def test_a_driving_read_ends_in_the_round_that_queued_its_record(held: _HeldLoop) -> None:
    loop = held.loop
    inbox = held.inbox()
    later: list[str] = []

    def record_arrives() -> None:
        loop.call_soon(later.append, "next round")
        inbox.offer(_data(0))

    loop.call_later(0.01, record_arrives)
    assert inbox.take_driving(5) == [_data(0)]
    # Queuing stopped the loop where it was: no further round ran before the reader got
    # its record (a completion callback would have needed one).
    assert later == []


def test_a_stale_stop_does_not_end_a_driving_read(held: _HeldLoop) -> None:
    loop = held.loop
    inbox = held.inbox()
    loop.call_soon(loop.stop)  # e.g. one meant for the loop thread, left over from a hand-over
    loop.call_later(0.05, inbox.offer, _data(0))
    assert inbox.take_driving(5) == [_data(0)]


def test_a_driving_read_without_records_meets_its_deadline(held: _HeldLoop) -> None:
    loop = held.loop
    inbox = held.inbox()
    loop.call_later(2, inbox.offer, _data(0))  # too late for the deadline below
    with pytest.raises(SessionTimeoutError) as caught:
        inbox.take_driving(0.05)
    assert caught.value.phase == "read"


def test_an_interrupted_driving_read_leaves_the_loop_to_others(held: _HeldLoop) -> None:
    loop = held.loop
    inbox = held.inbox()

    def interrupt() -> None:
        raise KeyboardInterrupt

    loop.call_later(0.01, interrupt)
    with pytest.raises(KeyboardInterrupt):
        inbox.take_driving(0.2)
    # Whoever runs the loop next is not stopped by this stream's records, nor by the
    # interrupted read's deadline.
    loop.call_later(0.01, inbox.offer, _data(0))
    loop.run_until_complete(asyncio.sleep(0.4))
    assert inbox.take_driving(5) == [_data(0)]


async def test_a_failure_wakes_a_thread_that_waits_for_records() -> None:
    inbox = _StreamInbox()
    failure = StreamAbortedError(1, "gone")
    started = threading.Event()
    taken: list[tuple[float, list[Any]]] = []

    def application() -> None:
        started.set()
        begun = time.monotonic()
        items = list(inbox.take_blocking(3))
        taken.append((time.monotonic() - begun, items))

    thread = threading.Thread(target=application)
    thread.start()
    await asyncio.to_thread(started.wait, 5)
    await asyncio.sleep(0.1)  # let it wait: an error queued on its own must wake it
    inbox.fail(failure)
    await asyncio.to_thread(thread.join, 10)
    [(waited, items)] = taken
    assert items == [failure]
    # Not woken, the wait would end only at its 3 s deadline (with the failure found then).
    assert waited < 2.5


def test_a_thread_reads_its_failure_once_the_loop_is_closed(held: _HeldLoop) -> None:
    loop = held.loop

    async def full() -> tuple[_StreamInbox, asyncio.Task[None]]:
        inbox = _StreamInbox(limit=1)
        await inbox.put(_data(0))
        waiting = asyncio.ensure_future(inbox.put(_data(1)))  # the hand-over, waiting for room
        await _settled()
        return inbox, waiting

    inbox, waiting = loop.run_until_complete(full())
    assert inbox.take_driving(1) == [_data(0)]  # the application holds a full batch
    loop.run_until_complete(_settled())  # the hand-over waits for room again
    # The session closes: its connection is failed (the hand-over cancelled, the stream
    # failed), then its loop closed; the application reads on.
    waiting.cancel()
    inbox.fail(StreamAbortedError(1, "session closed"))
    loop.run_until_complete(_settled())
    loop.close()
    [failure] = inbox.take_blocking(1)
    assert isinstance(failure, StreamAbortedError)
