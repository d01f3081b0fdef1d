"""The latency baseline: a bare TCP relay, one more process on the path and nothing else.

Run as its own process (``python -m benchmarks.tcp_relay --target HOST:PORT``); it prints
``PORT <n>`` once it listens on 127.0.0.1 and copies bytes both ways between each accepted
connection and a new connection to the target, as they arrive (asyncio streams, ``TCP_NODELAY``
as asyncio sets it). What the bridge adds beyond one such hop is its own work: decrypt, parse,
re-frame, encrypt. Unlike ``tests/relay.py`` it records nothing and parses nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

_READ = 64 * 1024


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_READ):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _main(host: str, port: int) -> None:
    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", 0, backlog=1024)
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Relay until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    asyncio.run(_main(host, int(port)))


if __name__ == "__main__":
    main()
