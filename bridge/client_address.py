"""Who the client is: the TCP peer, or the client a trusted proxy reports.

Behind a load balancer every connection comes from the balancer's address, so per-source
limits would count all clients as one. A proxy listed in ``trusted_proxies`` may therefore
name the client, in one of two ways:

- a **PROXY protocol v2 header** (``bridge.proxy_protocol``) at the start of the connection,
  when ``proxy_protocol`` is on. A connection from a trusted proxy must then start with one
  (the specification forbids guessing); connections from other peers are read as plain
  WebSocket traffic, and a header from them is not honoured (it fails the HTTP upgrade);
- an **X-Forwarded-For** header on the WebSocket upgrade request (what nginx sends). It is
  read from the right: each address a trusted hop appended is believed, and the first address
  that is not itself a trusted proxy is the client. Entries further left were written by
  parties nobody vouches for and are never read; a malformed entry stops the walk at the last
  trusted hop.

An X-Forwarded-For header from a peer that is not a trusted proxy is ignored, as is everything
else the client says about itself. Nothing here counts or refuses (``bridge.admission``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

FORWARDED_FOR_HEADER: Final = "X-Forwarded-For"
# A longer chain of proxies than this is not followed further (the walk stops where it is).
MAX_FORWARDED_HOPS: Final = 16

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as proxies write them: bare, ``[v6]``, ``[v6]:port`` or ``v4:port``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class ClientAddresses:
    """The trusted-proxy rules of one bridge; see the module docstring."""

    def __init__(self, trusted_proxies: Iterable[_Network], *, proxy_protocol: bool) -> None:
        self._trusted = tuple(trusted_proxies)
        self.proxy_protocol = proxy_protocol and bool(self._trusted)

    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` is a trusted proxy."""
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def expects_proxy_header(self, peer: str) -> bool:
        """Whether a connection from ``peer`` must start with a PROXY v2 header."""
        return self.proxy_protocol and self.is_trusted(peer)

    def forwarded_client(self, hop: str, forwarded_for: Iterable[str]) -> str:
        """The client behind ``hop`` according to the X-Forwarded-For header values.

        ``hop`` is the address the connection came from (the peer, or the PROXY header's
        source). Returned unchanged unless it is a trusted proxy that forwarded an address.
        """
        if not self._trusted:
            return hop
        entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
        current = hop
        for entry in reversed(entries[-MAX_FORWARDED_HOPS:]):
            if not self.is_trusted(current):
                break
            ip = _ip(entry)
            if ip is None:
                break  # the trusted hop vouched for garbage: count the hop itself
            current = str(ip)
        return current
