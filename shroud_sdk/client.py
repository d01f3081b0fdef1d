"""``shroud_sdk.OpenAI`` and ``shroud_sdk.AsyncOpenAI``: the ``openai`` clients, attested.

They are subclasses of whichever ``openai.OpenAI`` / ``openai.AsyncOpenAI`` is installed
(``openai`` 1.x, 2.x or 3.x) whose only difference is the HTTP client underneath: an httpx
client of the flavour that ``openai`` builds on (``httpx2`` from 3.x on, the legacy ``httpx``
package before) on a Shroud transport, so every request travels as a shroud/1 stream to a
bridge whose TDX evidence satisfied the policy. Resources, response types, streaming,
``with_raw_response``, errors, timeouts and ``max_retries`` are ``openai``'s.

Configuration: ``bridge_url``, ``api_key`` and ``policy`` (a ``Policy`` or a TOML path), with
``SHROUD_BRIDGE_URL``, ``SHROUD_API_KEY`` and ``SHROUD_POLICY`` as fallbacks. ``OPENAI_API_KEY``
is never read: a key meant for OpenAI is not sent to a bridge. There is no way to switch
verification off. Deliberately not here: the channel, the session and the evidence checks.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

import httpx
import httpx2
import openai
from openai import DEFAULT_MAX_RETRIES, NOT_GIVEN, NotGiven

from attestation.policy import Policy
from shroud_sdk.channel.usage import Usage
from shroud_sdk.errors import ShroudError
from shroud_sdk.overload import overload_status_error
from shroud_sdk.transport import (
    AsyncLegacyShroudTransport,
    AsyncShroudTransport,
    LegacyShroudTransport,
    ShroudTransport,
)
from shroud_sdk.verifier import AttestationReport, AttestationVerifier, QuoteCollateralSource

ENV_BRIDGE_URL: Final = "SHROUD_BRIDGE_URL"
ENV_API_KEY: Final = "SHROUD_API_KEY"
ENV_POLICY: Final = "SHROUD_POLICY"
# openai (and frameworks) refuse to send a request without an API key. A bridge that checks
# no key accepts any, so this stands in when none is configured; like any key, it travels only
# inside the encrypted channel.
NO_API_KEY: Final = "no-key-configured"
# Which httpx the installed openai builds on: httpx2 from openai 3.x on, legacy httpx before.
OPENAI_USES_HTTPX2: Final = issubclass(openai.DefaultHttpxClient, httpx2.Client)
# openai 2.x added a credentials check that a bridge accepting no key must be able to skip.
_ENFORCES_CREDENTIALS: Final = "_enforce_credentials" in inspect.signature(openai.OpenAI).parameters

SyncTransport = ShroudTransport | LegacyShroudTransport
AsyncTransport = AsyncShroudTransport | AsyncLegacyShroudTransport


class ConfigurationError(ShroudError, ValueError):
    """The client is missing its bridge URL or policy, or one of them is invalid."""


# -- openai before 2.31 ------------------------------------------------------------------------
# openai propagates an OpenAIError raised by its transport as is since 2.31.0. Earlier releases
# (and every release, for an error that is not an OpenAIError) retry any exception a transport
# raises, with backoff, and then raise a bare APIConnectionError ("Connection error.") from it.
# Retrying our typed errors would be wrong (a refused attestation fails again; a reset request
# already reached the model), and the wrapping would hide them from ``except``. So, within one
# ``request()`` call, the first typed error is remembered: the retries re-raise it at once,
# without a new handshake or sleep, and ``request()`` raises it unwrapped.

# Every error our transports raise that openai must not retry (httpx connect/read errors and
# timeouts are not among them: openai retries those as usual).
_NOT_RETRIED: Final = (ShroudError, openai.APIConnectionError)


class _FailFast:
    """The typed error the transport raised during the current ``request()`` call."""

    error: BaseException | None = None


_FAIL_FAST: ContextVar[_FailFast | None] = ContextVar("shroud_fail_fast", default=None)


def _raise_pending(pending: _FailFast | None) -> None:
    if pending is not None and pending.error is not None:
        raise pending.error


class _Attested:
    """An httpx client that remembers its attested transport (so ``copy()`` reuses it)."""

    shroud_transport: Any

    def __init__(self, transport: Any, timeout: Any) -> None:
        cast(Any, super()).__init__(transport=transport, follow_redirects=False, timeout=timeout)
        self.shroud_transport = transport


class _SyncAttested(_Attested):
    def send(self, request: Any, **kwargs: Any) -> Any:
        pending = _FAIL_FAST.get()
        _raise_pending(pending)
        try:
            return cast(Any, super()).send(request, **kwargs)
        except _NOT_RETRIED as error:
            if pending is not None:
                pending.error = error
            raise


class _AsyncAttested(_Attested):
    async def send(self, request: Any, **kwargs: Any) -> Any:
        pending = _FAIL_FAST.get()
        _raise_pending(pending)
        try:
            return await cast(Any, super()).send(request, **kwargs)
        except _NOT_RETRIED as error:
            if pending is not None:
                pending.error = error
            raise


class _AttestedClient(_SyncAttested, httpx2.Client):
    """An ``httpx2.Client`` on a ``ShroudTransport`` (openai 3.x)."""


class _AsyncAttestedClient(_AsyncAttested, httpx2.AsyncClient):
    """An ``httpx2.AsyncClient`` on an ``AsyncShroudTransport`` (openai 3.x)."""


class _LegacyAttestedClient(_SyncAttested, httpx.Client):
    """An ``httpx.Client`` on a ``LegacyShroudTransport`` (openai 1.x and 2.x)."""


class _AsyncLegacyAttestedClient(_AsyncAttested, httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on an ``AsyncLegacyShroudTransport`` (openai 1.x and 2.x)."""


@dataclass(frozen=True)
class _Flavour:
    """The transport, attested client and timeout classes matching one httpx package."""

    transport: type[Any]
    client: type[_Attested]
    timeout: type[Any]


if OPENAI_USES_HTTPX2:
    _SYNC = _Flavour(ShroudTransport, _AttestedClient, httpx2.Timeout)
    _ASYNC = _Flavour(AsyncShroudTransport, _AsyncAttestedClient, httpx2.Timeout)
else:
    _SYNC = _Flavour(LegacyShroudTransport, _LegacyAttestedClient, httpx.Timeout)
    _ASYNC = _Flavour(AsyncLegacyShroudTransport, _AsyncLegacyAttestedClient, httpx.Timeout)


def default_timeout(flavour: _Flavour = _SYNC) -> Any:
    """openai's default read timeout, with room in "connect" for handshake + verification
    (which may fetch Intel collateral on a cold cache)."""
    return flavour.timeout(600.0, connect=30.0)


def _native_timeout(timeout: Any, flavour: _Flavour) -> Any:
    """``timeout`` as the installed openai's httpx expects it.

    Code written for one openai major passes ``httpx2.Timeout`` or ``httpx.Timeout``; both
    mean the same four values, so the other flavour's object is converted, not refused.
    """
    if isinstance(timeout, httpx.Timeout | httpx2.Timeout) and not isinstance(
        timeout, flavour.timeout
    ):
        return flavour.timeout(**timeout.as_dict())
    return timeout


def resolve_policy(policy: Policy | str | os.PathLike[str] | None) -> Policy:
    """``policy`` itself, or loaded from that TOML path, or from ``$SHROUD_POLICY``."""
    if isinstance(policy, Policy):
        return policy
    source = policy if policy is not None else os.environ.get(ENV_POLICY)
    if not source:
        raise ConfigurationError(
            f"no attestation policy: pass policy=Policy(...) or a TOML path, or set {ENV_POLICY}"
        )
    return Policy.load(Path(source))


def _bridge_url(bridge_url: str | None) -> str:
    url = bridge_url if bridge_url is not None else os.environ.get(ENV_BRIDGE_URL)
    if not url:
        raise ConfigurationError(f"no bridge URL: pass bridge_url=... or set {ENV_BRIDGE_URL}")
    return url


def _api_key(api_key: str | None) -> str:
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")
    return key or NO_API_KEY


_TransportT = TypeVar("_TransportT", SyncTransport, AsyncTransport)


class _AttestedOpenAI(Generic[_TransportT]):
    """Everything both clients add to their ``openai`` base class, written once.

    The concrete classes name their flavour (sync or async); the constructor and the
    properties are the same for both.
    """

    _flavour: _Flavour
    _shroud_transport: _TransportT

    def __init__(
        self,
        *,
        bridge_url: str | None = None,
        api_key: str | None = None,
        policy: Policy | str | os.PathLike[str] | None = None,
        disclose: Iterable[str] = (),
        audience: str | None = None,
        collateral_source: QuoteCollateralSource | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: Any = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: Any = None,
        **kwargs: Any,
    ) -> None:
        flavour = self._flavour
        timeout = _native_timeout(timeout, flavour)
        transport: _TransportT
        if isinstance(http_client, flavour.client):  # copy() / with_options() / ShroudClients
            transport = http_client.shroud_transport
        elif http_client is not None:
            name = type(self).__name__
            raise ConfigurationError(
                f"shroud_sdk.{name} builds its own attested http_client; to bring your own, "
                f"give an openai.{name} an http_client whose transport is a "
                f"shroud_sdk.{flavour.transport.__name__} (see shroud_sdk.ShroudClients)"
            )
        else:
            resolved = resolve_policy(policy)
            try:
                transport = flavour.transport(
                    _bridge_url(bridge_url),
                    AttestationVerifier(resolved, collateral_source=collateral_source),
                    disclose=disclose,
                    audience=audience,
                    ssl_context=ssl_context,
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            timeout_value = default_timeout(flavour) if isinstance(timeout, NotGiven) else timeout
            http_client = flavour.client(transport, timeout_value)
        kwargs.pop("base_url", None)  # always the bridge's (unroutable) name
        kwargs.pop("_enforce_credentials", None)
        if _ENFORCES_CREDENTIALS:
            kwargs["_enforce_credentials"] = False  # a bridge may accept no key at all
        # The next class in the MRO is openai.OpenAI or openai.AsyncOpenAI.
        cast(Any, super()).__init__(
            api_key=_api_key(api_key),
            base_url=transport.base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            default_query=default_query,
            http_client=http_client,
            **kwargs,
        )
        self._shroud_transport = transport

    def _make_status_error(
        self, err_msg: str, *, body: object, response: Any
    ) -> openai.APIStatusError:
        # openai's hook for 4xx/5xx: a bridge overload refusal becomes BridgeRateLimitError /
        # BridgeBusyError (subclasses of the classes openai would raise), after openai's own
        # retries honoured its Retry-After.
        overload = overload_status_error(err_msg, body=body, response=response)
        if overload is not None:
            return cast(openai.APIStatusError, overload)
        error: openai.APIStatusError = cast(Any, super())._make_status_error(
            err_msg, body=body, response=response
        )
        return error

    def _calculate_retry_timeout(self, *args: Any, **kwargs: Any) -> float:
        pending = _FAIL_FAST.get()
        if pending is not None and pending.error is not None:
            return 0.0  # the "retry" only re-raises our error (see _FailFast): no backoff
        return cast(float, cast(Any, super())._calculate_retry_timeout(*args, **kwargs))

    @property
    def attestation(self) -> AttestationReport | None:
        """The latest bridge verification report (None before the first request)."""
        report = self._shroud_transport.attestation
        return report if isinstance(report, AttestationReport) else None

    @property
    def last_usage(self) -> Usage | None:
        """Bridge-signed, verified token usage of the latest fully read response."""
        return self._shroud_transport.last_usage

    @property
    def disclosed_fields(self) -> frozenset[str]:
        """The request fields this client shows the operator in clear."""
        return self._shroud_transport.session.config.disclose

    @property
    def bridge_url(self) -> str:
        """The attested bridge's WebSocket URL."""
        return self._shroud_transport.session.config.url

    @property
    def transport(self) -> _TransportT:
        """The attested transport (``ShroudTransport`` with openai 3.x, ``Legacy...`` before)."""
        return self._shroud_transport

    @property
    def http_client(self) -> Any:
        """The attested httpx client underneath, of the flavour the installed openai uses.

        Give it to frameworks that build their own ``openai`` client from an ``http_client``
        (with ``base_url=client.base_url``); they then share this client's attested session.
        """
        return cast(Any, self)._client


@contextlib.contextmanager
def _typed_errors() -> Iterator[None]:
    """Around one openai ``request()``: our first typed error fails fast, and is raised as is.

    Unwraps the bare ``APIConnectionError`` an openai before 2.31 (or any openai, for an error
    that is no ``OpenAIError``) raises from it (see ``_FailFast``).
    """
    token = _FAIL_FAST.set(_FailFast())
    try:
        yield
    except openai.APIConnectionError as error:
        cause = error.__cause__
        if type(error) is openai.APIConnectionError and isinstance(cause, _NOT_RETRIED):
            raise cause.with_traceback(cause.__traceback__) from None
        raise
    finally:
        _FAIL_FAST.reset(token)


class OpenAI(_AttestedOpenAI[SyncTransport], openai.OpenAI):
    """``openai.OpenAI`` over an attested, end-to-end encrypted session to a Shroud bridge.

    ``bridge_url``, ``api_key`` and ``policy`` (a ``Policy`` or a TOML path) configure it (see
    the module docstring for their environment fallbacks). ``disclose`` names the request
    fields the operator may see in clear (``model``, ``stream``, ``max_tokens``,
    ``max_completion_tokens``, ``n``); default none. ``audience`` is the deployment name the
    bridge must answer to (default: the URL's ``host:port``). ``collateral_source`` (e.g.
    ``attestation.collateral_cache.CollateralCache``) supplies Intel collateral when the
    bridge does not ship it. ``ssl_context`` verifies the TLS terminator in front of a
    ``wss://`` bridge (default: ``ssl.create_default_context()``, which trusts the system CAs
    or ``SSL_CERT_FILE``); a context that does not verify the certificate and host name is a
    ``ConfigurationError``. Other keyword arguments go to ``openai.OpenAI`` (``timeout``,
    ``max_retries``, ``default_headers``...). ``base_url`` is always the transport's
    unroutable name for the bridge (``https://<host>-<port>.shroud.invalid./v1``).
    """

    _flavour = _SYNC

    def request(self, *args: Any, **kwargs: Any) -> Any:
        """``openai``'s request; the transport's typed errors are never retried or wrapped."""
        with _typed_errors():
            return super().request(*args, **kwargs)


class AsyncOpenAI(_AttestedOpenAI[AsyncTransport], openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` over an attested session; arguments as ``shroud_sdk.OpenAI``."""

    _flavour = _ASYNC

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        """``openai``'s request; the transport's typed errors are never retried or wrapped."""
        with _typed_errors():
            return await super().request(*args, **kwargs)
