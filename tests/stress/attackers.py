"""Hostile clients that run in a process of their own, so their CPU is not the test's.

``python -m tests.stress.attackers flood URL AUDIENCE --from 127.0.0.2 --loops 64 --seconds N``
runs handshake loops: each connects, sends a valid ClientHello (made once and replayed, so
the attacker spends nothing on key generation; half ask for a fresh quote, half for the
bridge's attested key),
waits for the answer or the refusal, drops the connection and starts again at once.

``python -m tests.stress.attackers garbage URL AUDIENCE --from 127.0.0.2,127.0.0.3 --loops 8``
runs the same loops with ClientHellos the bridge must refuse (another audience, no common
suite, noise), spread over the listed source addresses: each
refusal is a line the bridge would log.

``python -m tests.stress.attackers quotes URL AUDIENCE --from 127.0.0.10 --count 60 --loops 2
--seconds N`` asks for fresh quotes from ``--count`` sources (consecutive addresses from
``--from``), ``--loops`` handshakes at a time from each (the per-source fresh-quote burst): each
loop sends a fresh-mode ClientHello, waits up to 30 s for the answer or the refusal, pauses
``--pause`` seconds and asks again. Retrying faster buys no more quotes (each source's budget
refills at the bridge's fresh-quote rate), only handshake CPU, which ``flood`` is about.

``python -m tests.stress.attackers slowloris HOST PORT --from 127.0.0.2 --count N --seconds S``
opens connections that send the WebSocket upgrade one byte every half second and never
finish it, reopening any the bridge closes.

``python -m tests.stress.attackers streams URL AUDIENCE --policy P --count N --model stall``
opens N streaming requests on one attested connection, prints ``ready`` once each has its
first chunk, and holds them: a client to be killed mid-stream.

``python -m tests.stress.attackers bodies URL AUDIENCE --policy P --count N --streams M
--size B`` opens N attested connections and keeps M requests in flight on each, every one a
JSON body of B bytes that is nothing but objects and arrays (the most expensive body to
parse), sending the next as soon as one is answered; it prints ``ready`` after the first
answer.

Each prints one JSON line of counts when done (or on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import signal
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from attestation.policy import Policy
from shroud_sdk.channel.connection import ClientConfig, ClientConnection
from shroud_sdk.channel.constants import IMPLEMENTED_SUITES, SIMULATED_SUITES
from shroud_sdk.channel.evidence import Evidence
from tests.e2e.client import ChannelClient


def _never_verified(evidence: Evidence, suite: int, /) -> Any:
    raise AssertionError("the attacker never completes a handshake")


def client_hello(audience: str, *, fresh: bool) -> bytes:
    """One valid ClientHello for ``audience`` (replayed by every loop); ``fresh`` asks for a
    quote over the handshake instead of the bridge's attested key."""
    config = ClientConfig(
        audience=audience,
        verifier=_never_verified,
        allowed_suites=frozenset(SIMULATED_SUITES),
        fresh_quote=fresh,
    )
    (hello,) = ClientConnection(config).data_to_send()
    return hello


async def _handshake(url: str, source: str, hello: bytes, answer_timeout: float) -> None:
    """One connection from ``source``: send ``hello``, wait for the bridge's answer; raises
    what the bridge's refusal or the connection's failure raises."""
    async with connect(url, compression=None, open_timeout=10, local_addr=(source, 0)) as ws:
        await ws.send(hello)
        await asyncio.wait_for(ws.recv(), answer_timeout)


async def flood(
    url: str, audience: str, source: str, loops: int, stop: asyncio.Event
) -> dict[str, int]:
    """Handshake loops until ``stop``, half asking for fresh quotes (the expensive kind), half
    for attested-key handshakes; counts of answers and refusals."""
    hellos = (client_hello(audience, fresh=False), client_hello(audience, fresh=True))
    counts = {"attempts": 0, "answered": 0, "refused_http": 0, "refused_close": 0, "errors": 0}

    async def loop(hello: bytes) -> None:
        while not stop.is_set():
            counts["attempts"] += 1
            try:
                await _handshake(url, source, hello, 10)
                counts["answered"] += 1
            except InvalidStatus:
                counts["refused_http"] += 1
            except WebSocketException:
                counts["refused_close"] += 1
            except (OSError, TimeoutError):
                counts["errors"] += 1
                await asyncio.sleep(0.01)

    await asyncio.gather(*(loop(hellos[n % 2]) for n in range(loops)))
    return counts


def bad_hellos(audience: str) -> tuple[bytes, ...]:
    """ClientHellos the bridge refuses at once (no quote made): one for another audience,
    one offering only hardware suites (a simulated bridge has none), one that does not
    decode."""
    wrong_audience = client_hello("elsewhere.example:443", fresh=False)
    config = ClientConfig(
        audience=audience,
        verifier=_never_verified,
        allowed_suites=frozenset(IMPLEMENTED_SUITES - SIMULATED_SUITES),
    )
    (hardware_only,) = ClientConnection(config).data_to_send()
    return (wrong_audience, hardware_only, bytes(range(64)))


async def garbage(
    url: str, audience: str, sources: list[str], loops: int, stop: asyncio.Event
) -> dict[str, int]:
    """Refused handshakes until ``stop``: ``loops`` loops per source address, each sending
    one of :func:`bad_hellos` per connection; counts of refusals."""
    hellos = bad_hellos(audience)
    counts = {"attempts": 0, "refused_http": 0, "refused_close": 0, "answered": 0, "errors": 0}

    async def loop(source: str, n: int) -> None:
        while not stop.is_set():
            counts["attempts"] += 1
            try:
                await _handshake(url, source, hellos[n % len(hellos)], 10)
                counts["answered"] += 1
            except InvalidStatus:
                counts["refused_http"] += 1
                await asyncio.sleep(0.01)
            except WebSocketException:
                counts["refused_close"] += 1
            except (OSError, TimeoutError):
                counts["errors"] += 1
                await asyncio.sleep(0.01)
            n += 1

    await asyncio.gather(*(loop(s, n) for s in sources for n in range(loops)))
    return counts


async def quotes(
    url: str,
    audience: str,
    first: str,
    sources: int,
    loops: int,
    pause: float,
    stop: asyncio.Event,
) -> dict[str, int]:
    """Fresh-quote handshakes from ``sources`` addresses until ``stop``; counts of answers,
    1013 refusals (and the slowest one in milliseconds: a refusal should cost no wait) and
    handshakes the bridge neither answered nor refused within 30 s."""
    hello = client_hello(audience, fresh=True)
    counts = {
        "attempts": 0,
        "answered": 0,
        "refused_1013": 0,
        "slowest_1013_ms": 0,
        "refused_other": 0,
        "unanswered": 0,
        "errors": 0,
    }

    async def loop(source: str) -> None:
        while not stop.is_set():
            counts["attempts"] += 1
            started = time.monotonic()
            try:
                await _handshake(url, source, hello, 30)
                counts["answered"] += 1
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code == 1013:
                    counts["refused_1013"] += 1
                    waited = int((time.monotonic() - started) * 1000)
                    counts["slowest_1013_ms"] = max(counts["slowest_1013_ms"], waited)
                else:
                    counts["refused_other"] += 1
            except TimeoutError:
                counts["unanswered"] += 1
            except (WebSocketException, OSError):
                counts["errors"] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    base = ipaddress.IPv4Address(first)
    addresses = [str(base + n) for n in range(sources)]
    await asyncio.gather(*(loop(a) for a in addresses for _ in range(loops)))
    return counts


async def slowloris(
    host: str, port: int, source: str, count: int, stop: asyncio.Event
) -> dict[str, int]:
    """Slow upgrade requests until ``stop``. Counts connections opened, answered (the bridge
    refused them with an HTTP answer) and cut silently (closed with no answer: a timeout),
    and the longest a silent connection lived, in milliseconds."""
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n".encode()
    counts = {"opened": 0, "answered": 0, "cut_silently": 0, "longest_silent_ms": 0, "errors": 0}

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
            except OSError:
                counts["errors"] += 1
                await asyncio.sleep(0.1)
                continue
            counts["opened"] += 1
            opened, answered = time.monotonic(), False
            try:
                for byte in request * 1000:
                    if stop.is_set():
                        return
                    writer.write(bytes([byte]))
                    await writer.drain()
                    with contextlib.suppress(TimeoutError):
                        data = await asyncio.wait_for(reader.read(1024), 0.5)
                        if not data:
                            break
                        answered = True
            except OSError:
                pass
            finally:
                writer.close()
            if answered:
                counts["answered"] += 1
            else:
                counts["cut_silently"] += 1
                lived = int((time.monotonic() - opened) * 1000)
                counts["longest_silent_ms"] = max(counts["longest_silent_ms"], lived)

    await asyncio.gather(*(one() for _ in range(count)))
    return counts


async def hold_streams(
    url: str, audience: str, root_pem: bytes, streams: int, model: str, stop: asyncio.Event
) -> dict[str, int]:
    """Open ``streams`` streaming requests to ``model``, say ``ready`` once each has its first
    chunk, then hold them until ``stop`` (or until the process is killed, which is the point)."""
    client = await ChannelClient.connect(url, audience=audience, root_pem=root_pem)
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    ).encode()
    sids = [await client.start("POST", "/v1/chat/completions", body=body) for _ in range(streams)]
    for sid in sids:
        await client.first_chunk(sid)
    print("ready", flush=True)
    await stop.wait()
    await client.close()
    return {"streams": streams}


def container_body(size: int) -> bytes:
    """A JSON request body of about ``size`` bytes made of ``{"a":[]}``: two containers (the
    parser's costliest values) per nine bytes."""
    head, unit, tail = b'{"model":"x","input":[', b'{"a":[]},', b"[]]}"
    return head + unit * ((size - len(head) - len(tail)) // len(unit)) + tail


async def send_bodies(
    url: str,
    audience: str,
    root_pem: bytes,
    source: str,
    connections: int,
    streams: int,
    size: int,
    stop: asyncio.Event,
) -> dict[str, int]:
    """Keep ``streams`` container-filled requests in flight on each of ``connections``
    connections until ``stop``; counts of answers by status."""
    body = container_body(size)
    counts: dict[str, int] = {"sent": 0, "errors": 0}
    answered = asyncio.Event()

    async def loop(client: ChannelClient) -> None:
        # Nothing disclosed: the attacker's own client never parses its body.
        disclosed = dict.fromkeys(client.handshake.disclose)
        while not stop.is_set():
            counts["sent"] += 1
            try:
                sid = await client.start("POST", "/v1/embeddings", body=body, disclosed=disclosed)
                response = await client.response(sid, seconds=120)
            except (WebSocketException, OSError, TimeoutError):
                counts["errors"] += 1
                return
            key = f"status_{response.status}"
            counts[key] = counts.get(key, 0) + 1
            if not answered.is_set():
                answered.set()
                print("ready", flush=True)

    clients = [
        await ChannelClient.connect(
            url, audience=audience, root_pem=root_pem, local_address=source, keep_bodies=False
        )
        for _ in range(connections)
    ]
    tasks = [asyncio.create_task(loop(c)) for c in clients for _ in range(streams)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.close()
    return counts


async def _main(args: argparse.Namespace) -> dict[str, int]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(args.seconds, stop.set)
    started = time.monotonic()
    if args.attack == "flood":
        counts = await flood(args.target, args.audience, args.source, args.loops, stop)
    elif args.attack == "garbage":
        sources = args.source.split(",")
        counts = await garbage(args.target, args.audience, sources, args.loops, stop)
    elif args.attack == "quotes":
        counts = await quotes(
            args.target, args.audience, args.source, args.count, args.loops, args.pause, stop
        )
    elif args.attack == "slowloris":
        counts = await slowloris(args.target, int(args.audience), args.source, args.count, stop)
    elif args.attack == "bodies":
        root_pem = Policy.load(args.policy).trusted_roots or ()
        counts = await send_bodies(
            args.target,
            args.audience,
            root_pem[0].encode("ascii"),
            args.source,
            args.count,
            args.streams,
            args.size,
            stop,
        )
    else:
        root_pem = Policy.load(args.policy).trusted_roots or ()
        counts = await hold_streams(
            args.target,
            args.audience,
            root_pem[0].encode("ascii"),
            args.count,
            args.model,
            stop,
        )
    counts["seconds"] = int(time.monotonic() - started)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "attack", choices=["flood", "garbage", "quotes", "slowloris", "streams", "bodies"]
    )
    parser.add_argument("target", help="flood: ws:// URL; slowloris: host")
    parser.add_argument("audience", help="flood: the bridge's audience; slowloris: port")
    parser.add_argument("--from", dest="source", default="127.0.0.2", help="garbage: a,b,...")
    parser.add_argument("--loops", type=int, default=64)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pause", type=float, default=0.5, help="quotes: between attempts")
    parser.add_argument("--policy", type=Path, help="streams: the bridge's dev policy")
    parser.add_argument("--model", default="stall", help="streams: the upstream model")
    parser.add_argument("--streams", type=int, default=2, help="bodies: requests per connection")
    parser.add_argument("--size", type=int, default=4 << 20, help="bodies: bytes per body")
    print(json.dumps(asyncio.run(_main(parser.parse_args()))), flush=True)


if __name__ == "__main__":
    main()
