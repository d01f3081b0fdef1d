"""The bridge process's attested key: served to every handshake, rotated in the background.

In attested-key mode (docs/protocol.md section 3.6) a handshake costs a signature, not a quote.
:class:`AttestedKeyHolder` is the channel core's ``KeyEvidenceProvider``: calling it returns the
current :class:`~shroud_sdk.channel.evidence.KeyEvidence` at once, never waiting for a quote, or
raises :class:`EvidenceUnavailableError` when the current key has expired (the core then
refuses the handshake with ``evidence-unavailable``). One holder per bridge process, no module
state: a bridge with several worker processes gives each its own key and quote.

Rotation runs as an asyncio task whose blocking work (key generation, the quote, collateral)
goes to worker threads, so the event loop never waits for the quoting service. A new key is
minted:

- when half the current key's lifetime has passed, so a client is normally never shown a key
  with less than half its window left, and a rotation has that much time to succeed;
- when the collateral the bridge would ship with the current quote changes (new TCB Info, QE
  Identity or CRLs reach clients at once, in new evidence bytes);
- after a failure, again and again with capped exponential back-off. Each failure is logged at
  ERROR with how long the current key still serves; once it has expired, at ERROR with
  "refusing attested-key handshakes", until a rotation succeeds. Any other error in the task
  is logged with its traceback and the task carries on after a pause: it never ends quietly.

The private key lives only in :class:`AttestedKeySigner`, in memory: it is never written,
logged, pickled, copied or shown in a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, NoReturn, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from bridge.metrics import RotationResult
from shroud_sdk.channel.ecdsa import sign_raw
from shroud_sdk.channel.evidence import KeyEvidence

_log = logging.getLogger(__name__)

# A key is replaced once this fraction of its lifetime has passed.
ROTATE_AT_FRACTION: Final = 0.5
DEFAULT_COLLATERAL_CHECK_INTERVAL: Final = 60.0
DEFAULT_RETRY_INITIAL: Final = 1.0
DEFAULT_RETRY_MAX: Final = 30.0
# The rotation task re-reads the clock at least this often (a wall clock can jump).
DEFAULT_MAX_SLEEP: Final = 30.0


class EvidenceUnavailableError(Exception):
    """The bridge has no attested key that is still valid (rotation keeps failing)."""


class AttestedKeySigner:
    """The private half of one attested key: signs, and does nothing else.

    ECDSA P-256 with SHA-256, raw ``r || s`` (the channel's ``TranscriptSigner``). The key
    cannot be read back, pickled or copied, and no repr shows it.
    """

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("an attested key is ECDSA P-256")
        self._key = key

    def __repr__(self) -> str:
        return "AttestedKeySigner(<private key held in memory>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an attested key never leaves the process")

    def sign(self, data: bytes, /) -> bytes:
        """ECDSA-P256-SHA256 over ``data``, as ``r || s``."""
        return sign_raw(self._key, data)


class KeyMinter(Protocol):
    """What the holder needs from ``bridge.evidence.BridgeEvidence`` (blocking calls)."""

    def mint_attested_key(self, lifetime: int) -> KeyEvidence: ...

    def collateral_for(self, quote: bytes) -> bytes | None: ...


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AttestedKeyHolder:
    """The current attested key of this process, and its rotation; see the module docstring.

    ``on_rotation`` is told each rotation's result and, after a success, the new ``not_after``
    (for metrics). ``clock`` is wall-clock UNIX seconds (the window is compared with clients'
    clocks); the intervals are parameters so tests can run a rotation in milliseconds.
    """

    def __init__(
        self,
        minter: KeyMinter,
        lifetime: int,
        *,
        clock: Callable[[], float] = time.time,
        on_rotation: Callable[[RotationResult, int | None], None] | None = None,
        collateral_check_interval: float = DEFAULT_COLLATERAL_CHECK_INTERVAL,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
        max_sleep: float = DEFAULT_MAX_SLEEP,
    ) -> None:
        if lifetime <= 0:
            raise ValueError("an attested key needs a positive lifetime")
        self._minter = minter
        self._lifetime = lifetime
        self._clock = clock
        self._on_rotation = on_rotation
        self._collateral_interval = collateral_check_interval
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._max_sleep = max_sleep
        self._current: KeyEvidence | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    def __repr__(self) -> str:
        current = self._current
        window = "none" if current is None else f"until {self._not_after(current)}"
        return f"AttestedKeyHolder(lifetime={self._lifetime}, key={window})"

    # -- serving (the channel core's KeyEvidenceProvider) -------------------------------------

    def __call__(self) -> KeyEvidence:
        """The current key and evidence; ``EvidenceUnavailableError`` if none is valid now."""
        current = self._current
        if current is None:
            raise EvidenceUnavailableError("no attested key has been made yet")
        not_after = self._not_after(current)
        if self._clock() >= not_after:
            raise EvidenceUnavailableError(
                f"the attested key expired at {_when(not_after)} and rotation is failing"
            )
        return current

    @property
    def current(self) -> KeyEvidence | None:
        """What is being served (even if expired); None before :meth:`start`."""
        return self._current

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Mint the first key (in a thread; its failure fails the start), then rotate."""
        first = await asyncio.to_thread(self._minter.mint_attested_key, self._lifetime)
        self._install(first)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop rotating (a quote already in its thread finishes there, unused)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- rotation ----------------------------------------------------------------------------

    async def _run(self) -> None:
        # Nothing may end rotation quietly: a dead task would let the key expire and every
        # attested-key handshake be refused. A rotation's own failure is handled below; this
        # catches the rest (a bug, a broken metrics callback) and starts over after a pause.
        while True:
            try:
                await self._rotate_forever()
            except Exception:
                self.failures += 1
                _log.exception(
                    "attested-key rotation failed unexpectedly; restarting it in %g s",
                    self._retry_max,
                )
                await asyncio.sleep(self._retry_max)

    async def _rotate_forever(self) -> None:
        retry = self._retry_initial
        next_collateral_check = self._clock() + self._collateral_interval
        while True:
            current = self._current
            assert current is not None  # installed by start()
            now = self._clock()
            due = self._rotation_due(current)
            reason = None
            if now >= due:
                reason = "half its lifetime passed"
            elif now >= next_collateral_check:
                next_collateral_check = now + self._collateral_interval
                if await self._collateral_changed(current):
                    reason = "the collateral changed"
            if reason is None:
                wake = min(due, next_collateral_check)
                await asyncio.sleep(max(0.0, min(wake - now, self._max_sleep)))
                continue
            if await self._rotate(reason):
                retry = self._retry_initial
                next_collateral_check = self._clock() + self._collateral_interval
            else:
                # Try again at the moment of expiry too, so the log says so when it happens.
                until_expiry = self._not_after(current) - self._clock()
                pause = min(retry, until_expiry) if until_expiry > 0 else retry
                await asyncio.sleep(max(pause, 0.001))
                retry = min(retry * 2, self._retry_max)

    async def _rotate(self, reason: str) -> bool:
        try:
            fresh = await asyncio.to_thread(self._minter.mint_attested_key, self._lifetime)
        except Exception as exc:  # any failure: keep serving, say so loudly, retry
            self.failures += 1
            self._report(RotationResult.FAILED, None)
            self._log_failure(exc)
            return False
        self._install(fresh)
        _log.info(
            "attested key rotated (%s); valid until %s", reason, _when(self._not_after(fresh))
        )
        return True

    def _install(self, key_evidence: KeyEvidence) -> None:
        self._current = key_evidence  # one reference swap: a handshake sees old or new, whole
        self._report(RotationResult.OK, self._not_after(key_evidence))

    async def _collateral_changed(self, current: KeyEvidence) -> bool:
        try:
            latest = await asyncio.to_thread(self._minter.collateral_for, current.evidence.quote)
        except Exception as exc:  # the supplier's own failures are logged by it
            _log.warning("could not check for new collateral: %s: %s", type(exc).__name__, exc)
            return False
        return latest is not None and latest != current.evidence.collateral

    def _log_failure(self, exc: Exception) -> None:
        current = self._current
        assert current is not None
        not_after = self._not_after(current)
        left = not_after - self._clock()
        what = f"{type(exc).__name__}: {exc}"
        if left > 0:
            _log.error(
                "attested-key rotation FAILED (%s); still serving the current key until %s "
                "(%d s left), retrying",
                what,
                _when(not_after),
                left,
            )
        else:
            _log.error(
                "attested-key rotation FAILED (%s) and the current key EXPIRED at %s: refusing "
                "attested-key handshakes (close 4001 evidence-unavailable) until a rotation "
                "succeeds",
                what,
                _when(not_after),
            )

    def _report(self, result: RotationResult, not_after: int | None) -> None:
        if self._on_rotation is not None:
            self._on_rotation(result, not_after)

    def _rotation_due(self, current: KeyEvidence) -> float:
        attested = current.evidence.attested_key
        assert attested is not None  # KeyEvidence guarantees it
        return attested.not_before + attested.lifetime * ROTATE_AT_FRACTION

    @staticmethod
    def _not_after(current: KeyEvidence) -> int:
        attested = current.evidence.attested_key
        assert attested is not None
        return attested.not_after
