"""The real ``BridgeServer`` on a private event-loop thread, with injectable quote providers.

End-to-end tests of normal operation use a bridge subprocess (``tests.bridgeproc``). Attack
scenarios need a bridge whose quote provider misbehaves (replays an old quote, quotes another
REPORTDATA, runs a debug TD), which only an in-process bridge can be given; it is still the
production server, session and evidence code, on real sockets on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from attestation.policy import Policy
from attestation.simulated import DEFAULT_TD_ATTRIBUTES, Measurements, SimulatedTd, SimulatedTdx
from bridge.config import parse_args
from bridge.providers.simulated import SimulatedQuoteProvider
from bridge.server import BridgeServer

_T = TypeVar("_T")

AUDIENCE = "shroud-sdk-tests"
# A debuggable TD: the simulator's sane attributes with DEBUG (bit 0) set.
DEBUG_TD_ATTRIBUTES = bytes([DEFAULT_TD_ATTRIBUTES[0] | 0x01]) + DEFAULT_TD_ATTRIBUTES[1:]


# One generation time per test process: a platform's certificates depend on it, so two bridges
# started in different seconds from the same seed must still share one root.
_GENERATED_AT = int(time.time())


def platform(seed: bytes = b"sdk-tests") -> SimulatedTdx:
    """A deterministic simulated platform valid now (for the next 30 days)."""
    return SimulatedTdx.generate(seed, now=_GENERATED_AT)


class ReplayingProvider(SimulatedQuoteProvider):
    """Answers every fresh-mode handshake after the first with the first handshake's quote.

    Quote 1 is the bridge's start-up attested key; quote 2 the first fresh handshake's.
    """

    def __init__(self, td: SimulatedTd) -> None:
        super().__init__(td)
        self.quotes: list[bytes] = []

    def get_quote(self, report_data: bytes) -> bytes:
        if len(self.quotes) < 2:
            self.quotes.append(super().get_quote(report_data))
        return self.quotes[-1]


class OtherSessionProvider(SimulatedQuoteProvider):
    """Quotes REPORTDATA that belongs to some other handshake (one bit differs)."""

    def get_quote(self, report_data: bytes) -> bytes:
        other = bytes([report_data[0] ^ 0x01]) + report_data[1:]
        return self._td.quote(other)


class ThreadBridge:
    """A started ``BridgeServer`` on its own loop thread; ``url``, ``policy``, ``restart()``."""

    def __init__(
        self,
        provider: SimulatedQuoteProvider,
        workdir: Path,
        args: Sequence[str],
        boot_measurements: Measurements | None = None,
        suites: frozenset[int] | None = None,
    ) -> None:
        self.provider = provider
        self.suites = suites
        self.boot_measurements = boot_measurements
        self.workdir = workdir
        self.args = tuple(args)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.server: BridgeServer | None = None
        self.port = 0

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    @property
    def policy_path(self) -> Path:
        return self.workdir / "policy.toml"

    @property
    def policy(self) -> Policy:
        """The development policy this bridge wrote for itself."""
        return Policy.load(self.policy_path)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def start(self) -> None:
        config = parse_args(
            [
                "--listen",
                f"127.0.0.1:{self.port}",
                "--audience",
                AUDIENCE,
                "--upstream",
                "demo",
                "--quote-provider",
                "simulated",
                "--collateral",
                "simulated",
                "--metrics-listen",
                "off",
                "--dev-policy-out",
                str(self.policy_path),
                "--shutdown-grace",
                "0.5",
                *self.args,
            ],
            {},
        )
        self.server = BridgeServer(config, quote_provider=self.provider, suites=self.suites)
        self._run(self.server.start())
        self.port = self.server.port

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.shutdown(grace=0.5))
            self.server = None

    def reboot(self) -> None:
        """Stop, then start on the same port as a freshly booted TD of the same platform.

        A new TD starts with RTMR3 at zero; restarting the bridge process inside the *same* TD
        would extend RTMR3 a second time, which the served log would not replay to.
        """
        self.stop()
        fresh = self.provider.platform.td(self.boot_measurements)
        self.provider = type(self.provider)(fresh)
        self.start()

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@contextmanager
def thread_bridge(
    workdir: Path,
    *,
    provider_cls: type[SimulatedQuoteProvider] = SimulatedQuoteProvider,
    measurements: Measurements | None = None,
    seed: bytes = b"sdk-tests",
    args: Sequence[str] = (),
    suites: frozenset[int] | None = None,
) -> Iterator[ThreadBridge]:
    """A running in-process bridge over a simulated TD (``suites`` narrows its offer)."""
    workdir.mkdir(parents=True, exist_ok=True)
    provider = provider_cls(platform(seed).td(measurements))
    bridge = ThreadBridge(provider, workdir, args, measurements, suites)
    try:
        bridge.start()
        yield bridge
    finally:
        bridge.close()
