"""Several bridge worker processes behind one listening socket (``--workers N``, N > 1).

One Python process serves on one core; a TD usually has several. The parent:

1. measures once (:func:`bridge.server.prepare_bridge`): creates the quote provider, extends
   RTMR3 with the image and configuration events and holds the runtime-log state. RTMR3 is
   one register per TD, so it must be extended once, before any worker quotes;
2. binds the listening socket (a bind error is reported once, naming the flag), then forks
   the workers (pre-fork: every worker inherits the same socket and the kernel hands each new
   connection to one of the workers waiting in ``accept``). Not ``SO_REUSEPORT``: with it,
   any process of the same user could bind the port too and be handed a share of the
   connections, and a dead worker's queued connections would be reset;
3. writes the development policy (if asked for) once the socket is bound, as a single bridge
   does; waits until every worker is serving, then serves ``/metrics``: the aggregate of every
   worker's metrics (prometheus_client's multiprocess mode, ``bridge.metrics.bind_aggregate``);
4. on SIGTERM or SIGINT, forwards SIGTERM to every worker (each drains as a single bridge
   does: ``/healthz`` answers 503, in-flight streams get ``shutdown_grace``, then the
   authenticated CLOSE), waits at most ``shutdown_grace + send_timeout`` and a margin, then
   kills what is left. The parent exits 0.

Each worker is a whole bridge of its own (``bridge.server.BridgeServer`` with the parent's
measurement and socket): its own event loop, upstream pool, usage-signing key, **attested key
and quote** (keys never cross a process boundary: N workers make N quotes at start and per
rotation, which the host's quoting service serialises), and its share of every bridge-wide
and per-source bound (``BridgeConfig.per_worker``: divided, rounded down, so together they
never exceed the configured figure). ``/healthz`` is answered by whichever worker accepts the
connection, and says what the whole bridge is doing: serving, or (every worker at once)
draining.

A worker that dies (a crash, the OOM killer) stops the bridge: the parent logs which worker
and how it ended, drains the others as on SIGTERM and exits 1, so that the supervisor
(systemd, Kubernetes) restarts the whole bridge and its health checks see the failure.
Restarting a single worker in place would mean forking from a parent that by then runs
threads (the metrics server), which is not fork-safe; and a crash loop would stay hidden. A
worker whose parent dies (SIGKILL) notices the closed pipe and shuts down.

Deliberately not here: what a worker does (``bridge.server``), flags (``bridge.config``).
Forking needs a POSIX system with ``os.pidfd_open`` (Linux 5.3+), which is what a TD runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from typing import TYPE_CHECKING, Final, NoReturn

from bridge.config import BridgeConfig

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from bridge.server import PreparedBridge

_log = logging.getLogger("bridge.workers")

# prometheus_client reads this once, when it is first imported (its multiprocess mode).
METRICS_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
# Beyond shutdown_grace + send_timeout: websockets' close timeout and process exit.
_STOP_MARGIN: Final = 10.0


def run(config: BridgeConfig) -> int:
    """Serve with ``config.effective_workers`` workers until SIGTERM/SIGINT; the exit status
    (0 after a clean shutdown, 1 when the bridge could not start or a worker died)."""
    directory = tempfile.mkdtemp(prefix="shroud-bridge-metrics-")
    os.environ[METRICS_DIR_ENV] = directory
    try:
        return _run(config, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run(config: BridgeConfig, directory: str) -> int:
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before the workers' metrics mode")
    # Imported only now: prometheus_client picks its multiprocess mode at import.
    from bridge.metrics import bind_aggregate
    from bridge.providers import QuoteProviderError
    from bridge.providers.dev_policy import write_policy_file
    from bridge.server import ListenError, listening_socket, naming_the_listener, prepare_bridge

    count = config.effective_workers
    try:
        prepared = prepare_bridge(config)
    except (QuoteProviderError, OSError, ValueError) as exc:
        _log.error("shroud-bridge cannot start: %s: %s", type(exc).__name__, exc)
        return 1
    try:
        try:
            sock = listening_socket(config.listen)
        except ListenError as exc:
            _log.error("shroud-bridge cannot start: %s", exc.strerror)
            return 1
        metrics_server = None
        if config.metrics_listen is not None:
            try:
                with naming_the_listener(config.metrics_listen, "--metrics-listen"):
                    metrics_server = bind_aggregate(
                        config.metrics_listen.host, config.metrics_listen.port, directory
                    )
            except ListenError as exc:
                sock.close()
                _log.error("shroud-bridge cannot start: %s", exc.strerror)
                return 1
        if prepared.dev_policy is not None and config.dev_policy_out is not None:
            # As a single bridge does: once both addresses are ours, before anyone is served.
            path = write_policy_file(config.dev_policy_out, prepared.dev_policy)
            _log.warning("wrote DEVELOPMENT policy for this simulated bridge to %s", path)
        ready_r, ready_w = os.pipe()  # each worker writes one byte once it serves
        alive_r, alive_w = os.pipe()  # the parent holds the write end: EOF = parent gone
        worker_config = config.per_worker(count)
        inherited = dataclasses.replace(prepared, state=None, dev_policy=None)
        pids: list[int] = []
        for _ in range(count):
            pid = os.fork()
            if pid == 0:
                os.close(ready_r)
                os.close(alive_w)
                if metrics_server is not None:
                    metrics_server.server_close()  # the parent's
                _worker(worker_config, inherited, sock, ready_w, alive_r)
            pids.append(pid)
        os.close(ready_w)
        os.close(alive_r)
        sock.close()  # only the workers accept
        try:
            return asyncio.run(_supervise(config, metrics_server, pids, ready_r, directory))
        finally:
            os.close(ready_r)
            os.close(alive_w)
            if metrics_server is not None:
                metrics_server.server_close()
    finally:
        if prepared.state is not None:
            prepared.state.close()


def _worker(
    config: BridgeConfig,
    prepared: PreparedBridge,
    sock: socket.socket,
    ready: int,
    parent_alive: int,
) -> NoReturn:
    """The forked child: serve until SIGTERM or the parent's death; never returns."""
    code = 1
    try:
        code = asyncio.run(_serve(config, prepared, sock, ready, parent_alive))
    except BaseException as exc:
        _log.error("worker %d failed: %s", os.getpid(), type(exc).__name__)
    finally:
        logging.shutdown()
        os._exit(code)


async def _serve(
    config: BridgeConfig,
    prepared: PreparedBridge,
    sock: socket.socket,
    ready: int,
    parent_alive: int,
) -> int:
    from bridge.server import BridgeServer

    server = BridgeServer(config, prepared=prepared, sock=sock)
    try:
        await server.start()
    except Exception as exc:
        _log.error("worker %d cannot start: %s: %s", os.getpid(), type(exc).__name__, exc)
        await server.shutdown(grace=0)
        return 1
    os.write(ready, b"r")
    os.close(ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # SIGINT (a terminal's ^C reaches the whole group) is the parent's to turn into SIGTERM.
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_reader(parent_alive, stop.set)  # readable only at EOF: the parent is gone
    await stop.wait()
    loop.remove_reader(parent_alive)
    await server.shutdown()
    return 0


async def _supervise(
    config: BridgeConfig,
    metrics_server: WSGIServer | None,
    pids: list[int],
    ready: int,
    directory: str,
) -> int:
    from prometheus_client import multiprocess

    from bridge.metrics import serve_in_thread

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    all_ready = asyncio.Event()
    stopping = False
    status = 0
    live: dict[int, int] = {}  # pid -> pidfd
    none_left = asyncio.Event()
    started = 0

    def exited(pid: int) -> None:
        nonlocal status
        fd = live.pop(pid)
        loop.remove_reader(fd)
        os.close(fd)
        _, code = os.waitpid(pid, 0)
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        if not live:
            none_left.set()
        if not stopping:
            how = (
                f"signal {signal.Signals(-os.waitstatus_to_exitcode(code)).name}"
                if os.WIFSIGNALED(code)
                else f"status {os.waitstatus_to_exitcode(code)}"
            )
            _log.error("worker %d exited (%s): stopping the bridge", pid, how)
            status = 1
            stop.set()

    def readied() -> None:
        nonlocal started
        started += len(os.read(ready, 64))
        if started >= len(pids):
            loop.remove_reader(ready)
            all_ready.set()

    for pid in pids:
        fd = os.pidfd_open(pid)
        live[pid] = fd
        loop.add_reader(fd, exited, pid)
    loop.add_reader(ready, readied)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    metrics_thread = None
    waiting = asyncio.ensure_future(all_ready.wait())
    await asyncio.wait({waiting, asyncio.ensure_future(stop.wait())}, return_when="FIRST_COMPLETED")
    if all_ready.is_set() and not stop.is_set():
        if metrics_server is not None:
            metrics_thread = serve_in_thread(metrics_server)
        _log.info(
            "shroud-bridge serving on %s with %d workers (pids %s)",
            config.listen,
            len(pids),
            ", ".join(map(str, pids)),
        )
    waiting.cancel()
    await stop.wait()
    stopping = True
    if status == 0:
        _log.info(
            "signal received: stopping %d workers (grace %.1fs)", len(live), config.shutdown_grace
        )
    for pid in list(live):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(config.shutdown_grace + config.send_timeout + _STOP_MARGIN):
            await none_left.wait()
    for pid in list(live):
        _log.warning("worker %d did not stop in time: killed", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await none_left.wait()
    if metrics_server is not None and metrics_thread is not None:
        metrics_server.shutdown()
        metrics_thread.join(timeout=5)
    _log.info("shroud-bridge stopped")
    return status
