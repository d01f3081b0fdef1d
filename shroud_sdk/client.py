"""``shroud_sdk.OpenAI`` and ``shroud_sdk.AsyncOpenAI``: the ``openai`` clients, attested.

They are subclasses of ``openai.OpenAI`` / ``openai.AsyncOpenAI`` whose only difference is the
HTTP client underneath: an ``httpx2`` client on a ``ShroudTransport``, so every request travels
as a shroud/1 stream to a bridge whose TDX evidence satisfied the policy. Resources, response
types, streaming, ``with_raw_response``, errors, timeouts and ``max_retries`` are ``openai``'s.

Configuration: ``bridge_url``, ``api_key`` and ``policy`` (a ``Policy`` or a TOML path), with
``SHROUD_BRIDGE_URL``, ``SHROUD_API_KEY`` and ``SHROUD_POLICY`` as fallbacks. ``OPENAI_API_KEY``
is never read: a key meant for OpenAI is not sent to a bridge. There is no way to switch
verification off. Deliberately not here: the channel, the session and the evidence checks.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Generic, TypeVar, cast

import httpx2
import openai
from openai import DEFAULT_MAX_RETRIES, NOT_GIVEN, NotGiven

from attestation.policy import Policy
from shroud_sdk.channel.usage import Usage
from shroud_sdk.errors import ShroudError
from shroud_sdk.overload import overload_status_error
from shroud_sdk.transport import AsyncShroudTransport, ShroudTransport
from shroud_sdk.verifier import AttestationReport, AttestationVerifier, QuoteCollateralSource

ENV_BRIDGE_URL: Final = "SHROUD_BRIDGE_URL"
ENV_API_KEY: Final = "SHROUD_API_KEY"
ENV_POLICY: Final = "SHROUD_POLICY"
# openai's default read timeout, with room in "connect" for handshake + quote verification
# (which may fetch Intel collateral on a cold cache).
DEFAULT_TIMEOUT: Final = httpx2.Timeout(600.0, connect=30.0)


class ConfigurationError(ShroudError, ValueError):
    """The client is missing its bridge URL or policy, or one of them is invalid."""


class _AttestedClient(httpx2.Client):
    """An ``httpx2.Client`` that remembers its attested transport (so ``copy()`` reuses it)."""

    def __init__(self, transport: ShroudTransport, timeout: Any) -> None:
        super().__init__(transport=transport, follow_redirects=False, timeout=timeout)
        self.shroud_transport = transport


class _AsyncAttestedClient(httpx2.AsyncClient):
    """The asyncio counterpart of ``_AttestedClient``."""

    def __init__(self, transport: AsyncShroudTransport, timeout: Any) -> None:
        super().__init__(transport=transport, follow_redirects=False, timeout=timeout)
        self.shroud_transport = transport


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
    return api_key if api_key is not None else os.environ.get(ENV_API_KEY, "")


_TransportT = TypeVar("_TransportT", ShroudTransport, AsyncShroudTransport)
_HttpClientT = TypeVar("_HttpClientT", httpx2.Client, httpx2.AsyncClient)


class _AttestedOpenAI(Generic[_TransportT, _HttpClientT]):
    """Everything both clients add to their ``openai`` base class, written once.

    The concrete classes name their transport and attested http client; the constructor and
    the properties are the same for sync and async.
    """

    _transport_cls: type[_TransportT]
    _attested_cls: type[_AttestedClient] | type[_AsyncAttestedClient]
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
        timeout: float | httpx2.Timeout | NotGiven | None = NOT_GIVEN,
        max_retries: int = DEFAULT_MAX_RETRIES,
        default_headers: Mapping[str, str] | None = None,
        default_query: Mapping[str, object] | None = None,
        http_client: _HttpClientT | None = None,
        **kwargs: Any,
    ) -> None:
        transport: _TransportT
        if isinstance(http_client, self._attested_cls):  # copy() / with_options()
            transport = cast(Any, http_client).shroud_transport
        elif http_client is not None:
            name = type(self).__name__
            raise ConfigurationError(
                f"shroud_sdk.{name} builds its own attested http_client; to bring your own, "
                f"give an openai.{name} an http_client whose transport is a "
                f"shroud_sdk.{self._transport_cls.__name__}"
            )
        else:
            resolved = resolve_policy(policy)
            try:
                transport = self._transport_cls(
                    _bridge_url(bridge_url),
                    AttestationVerifier(resolved, collateral_source=collateral_source),
                    allow_simulated=resolved.allow_simulated_tee,
                    disclose=disclose,
                    audience=audience,
                    ssl_context=ssl_context,
                )
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            timeout_value = DEFAULT_TIMEOUT if isinstance(timeout, NotGiven) else timeout
            http_client = cast(Any, self._attested_cls)(transport, timeout_value)
        kwargs.pop("base_url", None)  # always the bridge's
        kwargs.pop("_enforce_credentials", None)  # a bridge may accept no key at all
        # The next class in the MRO is openai.OpenAI or openai.AsyncOpenAI.
        cast(Any, super()).__init__(
            api_key=_api_key(api_key),
            base_url=transport.base_url,
            timeout=timeout,
            max_retries=max_retries,
            default_headers=default_headers,
            default_query=default_query,
            http_client=http_client,
            _enforce_credentials=False,
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
        """The attested transport (share it with other httpx2-based clients)."""
        return self._shroud_transport


class OpenAI(_AttestedOpenAI[ShroudTransport, httpx2.Client], openai.OpenAI):
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
    ``max_retries``, ``default_headers``...).
    """

    _transport_cls = ShroudTransport
    _attested_cls = _AttestedClient


class AsyncOpenAI(_AttestedOpenAI[AsyncShroudTransport, httpx2.AsyncClient], openai.AsyncOpenAI):
    """``openai.AsyncOpenAI`` over an attested session; arguments as ``shroud_sdk.OpenAI``."""

    _transport_cls = AsyncShroudTransport
    _attested_cls = _AsyncAttestedClient
