"""``ShroudClients``: one attested bridge, in every shape an OpenAI-compatible framework asks for.

LangChain, LlamaIndex, pydantic-ai, LiteLLM and others build ``openai`` clients of their own,
sync *and* async, from a base URL, an API key and (optionally) httpx clients, or accept
``openai`` client objects. Give them only one of the two and they build the other themselves,
from the base URL. So every piece here comes in pairs that share one configuration, and the
base URL is the transport's unroutable name for the bridge: a client a framework builds
without our transport fails at DNS and sends nothing (``shroud_sdk.transport``).

docs/frameworks.md has the recipe for each framework; ``tests/integrations`` runs them.
Deliberately not here: any import of a framework.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from openai import DEFAULT_MAX_RETRIES, NOT_GIVEN, NotGiven

from attestation.policy import Policy
from shroud_sdk.client import (
    _ASYNC,
    _SYNC,
    AsyncOpenAI,
    ConfigurationError,
    OpenAI,
    _api_key,
    _bridge_url,
    _native_timeout,
    default_timeout,
    resolve_policy,
)
from shroud_sdk.session import SessionConfig
from shroud_sdk.transport import _Origin
from shroud_sdk.verifier import AttestationReport, AttestationVerifier, QuoteCollateralSource


class ShroudClients:
    """Attested sync and async clients for one bridge, created on first use, sharing a policy.

    Arguments as ``shroud_sdk.OpenAI`` (with the same ``SHROUD_*`` environment fallbacks):
    ``bridge_url``, ``api_key``, ``policy``, ``disclose``, ``audience``,
    ``collateral_source``, ``ssl_context``, ``timeout``, ``max_retries``. Pieces:

    - ``base_url`` and ``api_key``: what frameworks take as their base URL and key;
    - ``http_client`` / ``async_http_client``: attested httpx clients of the flavour the
      installed ``openai`` uses (for frameworks that accept httpx clients);
    - ``openai`` / ``async_openai``: ``shroud_sdk.OpenAI`` / ``AsyncOpenAI`` on those same
      clients (for frameworks that accept ``openai`` client objects).

    The sync pieces share one attested session, and the async ones another. ``close()`` (or
    ``with``) closes the sync side; ``await aclose()`` (or ``async with``) both.
    """

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
    ) -> None:
        self.bridge_url = _bridge_url(bridge_url)
        self.api_key = _api_key(api_key)
        self._verifier = AttestationVerifier(
            resolve_policy(policy), collateral_source=collateral_source
        )
        self._transport_options: dict[str, Any] = {
            "disclose": tuple(disclose),
            "audience": audience,
            "ssl_context": ssl_context,
        }
        self._timeout = timeout
        self._max_retries = max_retries
        try:  # refuse a bad URL, audience or disclosure now, not at the first request
            SessionConfig(
                self.bridge_url,
                self._verifier,
                audience or "",
                disclose=frozenset(disclose),
                ssl_context=ssl_context,
            ).client_config(self._verifier)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.base_url = _Origin.of_bridge(self.bridge_url).base_url()

    def _transport(self, cls: type[Any]) -> Any:
        return cls(self.bridge_url, self._verifier, **self._transport_options)

    def _http(self, flavour: Any) -> Any:
        timeout = self._timeout
        if isinstance(timeout, NotGiven):
            timeout = default_timeout(flavour)
        return flavour.client(self._transport(flavour.transport), _native_timeout(timeout, flavour))

    @cached_property
    def http_client(self) -> Any:
        """The attested sync httpx client (``httpx2.Client`` with openai 3.x, else
        ``httpx.Client``); requests must use ``base_url``."""
        return self._http(_SYNC)

    @cached_property
    def async_http_client(self) -> Any:
        """The attested async httpx client, of the same flavour as ``http_client``."""
        return self._http(_ASYNC)

    @cached_property
    def openai(self) -> OpenAI:
        """A ``shroud_sdk.OpenAI`` on ``http_client`` (the same attested session)."""
        return OpenAI(
            http_client=self.http_client,
            api_key=self.api_key,
            timeout=self._timeout,
            max_retries=self._max_retries,
        )

    @cached_property
    def async_openai(self) -> AsyncOpenAI:
        """A ``shroud_sdk.AsyncOpenAI`` on ``async_http_client``."""
        return AsyncOpenAI(
            http_client=self.async_http_client,
            api_key=self.api_key,
            timeout=self._timeout,
            max_retries=self._max_retries,
        )

    @property
    def attestation(self) -> AttestationReport | None:
        """The sync session's latest verification report, else the async session's."""
        for name in ("http_client", "async_http_client"):
            client = self.__dict__.get(name)
            report = client.shroud_transport.attestation if client is not None else None
            if isinstance(report, AttestationReport):
                return report
        return None

    def close(self) -> None:
        """Close the sync session (its connection and thread), if it was ever opened."""
        client = self.__dict__.pop("http_client", None)
        self.__dict__.pop("openai", None)
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close both sessions."""
        self.close()
        client = self.__dict__.pop("async_http_client", None)
        self.__dict__.pop("async_openai", None)
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()

    def __enter__(self) -> ShroudClients:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> ShroudClients:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"ShroudClients(bridge_url={self.bridge_url!r}, base_url={self.base_url!r})"
