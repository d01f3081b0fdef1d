"""The development policy a simulated bridge writes for its clients (``--dev-policy-out``).

It trusts exactly this bridge's simulated root, and pins what the bridge measured: the simulated
TD's MRTD and the RTMR3 events ``shroud.image-digest`` (when configured) and
``shroud.config-hash``, by their event digests, and sets ``allow_simulated_tee`` so that the
SDK offers the channel's simulated-TEE suite. A client loading it accepts this bridge's evidence
and no other. The file says at its top that it is for development only.

This module writes a policy; it does not evaluate one (``attestation.policy`` does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from attestation.eventlog import runtime_event_digest
from attestation.policy import MeasurementPins, Policy
from attestation.report import TcbStatus
from bridge.providers.measure import MeasuredConfiguration
from bridge.providers.simulated import SimulatedQuoteProvider

DEV_POLICY_BANNER: Final = (
    "# DEVELOPMENT POLICY written by shroud-bridge for its SIMULATED TDX platform.\n"
    "# It trusts a root CA generated on the bridge's machine: evidence it accepts proves\n"
    "# nothing about confidential hardware. Never use it for real data.\n"
)


def build_dev_policy(provider: SimulatedQuoteProvider, measured: MeasuredConfiguration) -> Policy:
    """A policy trusting ``provider``'s root and pinning its MRTD and the measured events."""
    pins: dict[str, frozenset[str]] = {}
    for name, payload in measured.events:
        pins[name] = pins.get(name, frozenset()) | {runtime_event_digest(name, payload).hex()}
    return Policy(
        allowed_tcb_statuses=frozenset({TcbStatus.UP_TO_DATE}),
        trusted_roots=(provider.platform.root_pem.decode("ascii"),),
        measurements=MeasurementPins(mr_td=frozenset({provider.td.measurements.mr_td.hex()})),
        required_rtmr3_events=pins,
        allow_simulated_tee=True,
    )


def dev_policy_text(provider: SimulatedQuoteProvider, measured: MeasuredConfiguration) -> str:
    """:func:`build_dev_policy` as TOML, banner first."""
    return DEV_POLICY_BANNER + build_dev_policy(provider, measured).to_toml()


def write_policy_file(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and a rename; return the path.

    A client never reads half a policy.
    """
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="ascii")
    os.replace(temporary, target)
    return target
