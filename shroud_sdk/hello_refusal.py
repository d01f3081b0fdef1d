"""A bridge's refusal of the ClientHello, turned into an error that says what to change.

A bridge refuses a hello it cannot serve (another audience, no common suite, another protocol
version) by closing the WebSocket with 4001 and a reason ``check: text`` that names its own,
public values (docs/protocol.md §9). That reason arrives before any key is agreed, so it is
unauthenticated: this module only *reads* it to explain the refusal to the user, and nothing
here changes what the client offers or where it connects. Deliberately not here: the I/O that
receives the reason (``shroud_sdk.session``), and refusals for lack of capacity (close 1013,
HTTP 429/503: ``shroud_sdk.refusals`` and ``shroud_sdk.overload``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from shroud_sdk.channel.constants import HYBRID_SUITES, SIMULATED_SUITES, describe_suites
from shroud_sdk.errors import HandshakeError

_MAX_SHOWN: Final = 120
_SUPPORTED: Final = re.compile(r"supports \[([0-9, ]*)\]")


def bridge_refusal(
    reason: str,
    *,
    audience: str,
    offered: Sequence[int],
    allow_simulated: bool,
    require_post_quantum: bool,
) -> HandshakeError:
    """The ``HandshakeError`` (check ``bridge-refused``) for a 4001 close with ``reason``.

    ``audience`` and ``offered`` are what this client sent; ``allow_simulated`` and
    ``require_post_quantum`` the policy choices that shaped the offer.
    """
    shown = "".join(c for c in reason[:_MAX_SHOWN] if c.isprintable())
    check, _, detail = shown.partition(":")
    detail = detail.strip()
    said = f" The bridge says (unauthenticated): {detail!r}." if detail else ""
    if check == "audience":
        advice = (
            f"it does not answer to the audience this client named, {audience!r}.{said} "
            "The audience defaults to the bridge URL's host:port; if the bridge you mean to "
            "reach answers to another name (e.g. behind a load balancer), pass the name its "
            "operator publishes as audience=...; otherwise check bridge_url"
        )
    elif check == "suite":
        advice = (
            f"it shares no cipher suite with this client, which offered "
            f"{describe_suites(offered)}.{said} "
            + _suite_advice(_supported(detail), allow_simulated, require_post_quantum)
        )
    elif check == "version":
        advice = (
            f"it speaks another shroud protocol version.{said} Upgrade the SDK or the bridge so "
            "that both speak shroud/1"
        )
    else:
        advice = f"it refused the ClientHello ({shown or 'no reason given'})"
    return HandshakeError("bridge-refused", f"the bridge refused the handshake: {advice}")


def _supported(detail: str) -> frozenset[int] | None:
    match = _SUPPORTED.search(detail)
    if match is None:
        return None
    return frozenset(int(n) for n in match.group(1).replace(" ", "").split(",") if n)


def _suite_advice(
    supported: frozenset[int] | None, allow_simulated: bool, require_post_quantum: bool
) -> str:
    if supported and supported <= SIMULATED_SUITES and not allow_simulated:
        return (
            "It runs on a SIMULATED TEE (development only): to use it anyway, load the "
            "policy it wrote with --dev-policy-out, which sets allow_simulated_tee = true and "
            "trusts its simulated root"
        )
    if require_post_quantum and supported is not None and not supported & HYBRID_SUITES:
        return (
            "The policy sets require_post_quantum = true, so this client offered only hybrid "
            "P-256 + ML-KEM-768 suites, and the bridge supports none: ask its operator for "
            "suite 2 (every current shroud-bridge has it), or remove require_post_quantum to "
            "accept a classical key agreement"
        )
    if require_post_quantum:
        return (
            "The policy sets require_post_quantum = true, so this client offered only hybrid "
            "suites; upgrade the bridge or remove require_post_quantum"
        )
    return "Upgrade the SDK or the bridge so that they share a suite"
