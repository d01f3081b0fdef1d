"""``shroud-attest policy init``: draft a production policy from verified evidence.

An operator releasing a bridge needs the values clients will pin: the aggregate image hash of
the VM (MRTD, RTMR0-2) and the RTMR3 events the bridge measured (its image digest and its
configuration hash). This module turns *verified* evidence into a commented TOML policy that
pins exactly those, says where each value came from, and lists stricter optional pins as
comments for the operator to enable. The evidence comes either from a running bridge (one real
handshake, ``shroud_sdk.probe``) or from a quote plus event logs on disk.

The draft is checked before it is written: it must load as a ``Policy`` and must accept the
evidence it was drawn from (except for a TCB status other than ``UpToDate``, which is reported:
patch the platform or widen ``allowed_tcb_statuses`` deliberately). Evidence whose quote does
not verify, or whose runtime log does not replay to RTMR3, yields no draft at all.

What it does not do: publish anything, or decide for the operator which optional pins fit
their fleet (a TDX module update changes MRSEAM; CPU generations differ in XFAM).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import tomli_w
from cryptography import x509

from attestation.collateral import Collateral
from attestation.errors import AttestationError, PolicyError
from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    EventLog,
    ReplayResult,
    parse_event_log,
    replay_against,
)
from attestation.image_hash import IMAGE_HASH_REGISTERS, aggregate_image_hash, image_digests
from attestation.pcs import INTEL_PCS_URL, CollateralFetcher, collateral_request_for_quote
from attestation.policy import Policy
from attestation.quote import Quote
from attestation.quote_parser import parse_quote
from attestation.report import TcbStatus, VerificationReport
from attestation.verify import verify_quote

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
_PINNED_EVENTS = (IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT)
_MAX_INPUT_BYTES = 16 * 1024 * 1024


class DraftError(AttestationError):
    """The evidence cannot yield a trustworthy draft (unverified quote, log that does not
    replay, a draft that would reject its own evidence)."""


@dataclass(frozen=True)
class Draft:
    """A drafted policy: the commented TOML, the parsed policy, and warnings for the operator."""

    text: str
    policy: Policy
    warnings: tuple[str, ...]


def _toml(key: str, value: Any) -> str:
    return tomli_w.dumps({key: value}).rstrip("\n")


def draft_policy(
    report: VerificationReport,
    replay: ReplayResult | None,
    *,
    source: str,
    trusted_roots: tuple[str, ...] | None = None,
    simulated: bool = False,
    audience: str | None = None,
) -> Draft:
    """A commented production policy pinning what ``report`` (and ``replay``) proved.

    ``report`` must be a successful ``verify_quote`` report; ``replay`` the event logs replayed
    against the same quote (None without logs). ``trusted_roots`` and ``simulated`` are carried
    into the draft only for a simulated platform. Raises ``DraftError``.
    """
    if not report.ok or report.quote is None:
        failed = ", ".join(f"{c.name} ({c.detail})" for c in report.failed) or "checks skipped"
        raise DraftError(f"the quote did not verify, so nothing in it can be pinned: {failed}")
    td = report.quote.td_report
    warnings: list[str] = []
    events: dict[str, frozenset[str]] = {}
    shown: dict[str, str] = {}
    if replay is not None:
        if replay.verified_events(3) is None:
            raise DraftError(
                "the runtime log does not replay to the quote's RTMR3: " + replay.register(3).detail
            )
        digests = image_digests(replay)
        for event in digests.events:
            if event.name in _PINNED_EVENTS:
                events[event.name] = frozenset({event.digest.hex()})
                shown[event.name] = (
                    digests.image_digest or ""
                    if event.name == IMAGE_DIGEST_EVENT
                    else (digests.config_hash or b"").hex()
                )
    for name in _PINNED_EVENTS:
        if name not in events:
            warnings.append(
                f"no verified {name} event: RTMR3 is not pinned for it (give the bridge's "
                "runtime log, or take the evidence from the running bridge)"
            )
    status = report.tcb_status
    if status is not TcbStatus.UP_TO_DATE:
        warnings.append(
            f"the platform's TCB status is {status.value if status else 'unknown'}: the draft "
            "allows only UpToDate, so it rejects this platform until it is updated"
        )

    now = dt.datetime.fromtimestamp(report.verified_at or time.time(), dt.UTC)
    lines = [
        "# Shroud attestation policy: DRAFT written by `shroud-attest policy init`.",
        f"# Evidence: {source}" + (f" (audience {audience!r})" if audience else ""),
        f"# Verified {now:%Y-%m-%d %H:%M:%S} UTC: quote, certificate chains and collateral OK;",
        f"# TCB status {status.value if status else 'unknown'}"
        + (f", FMSPC {report.fmspc.hex()}" if report.fmspc else "")
        + (f", advisories {', '.join(report.advisory_ids)}" if report.advisory_ids else "")
        + ".",
        "# Review every value, then publish this file with the release (docs/deployment.md,",
        "# 'Publish the policy'). It pins what this one machine booted and runs: every VM of",
        "# the fleet must boot the same image with the same bridge configuration.",
    ]
    if simulated:
        lines += [
            "#",
            "# !!! SIMULATED TEE: this evidence came from a simulated TDX platform whose root CA",
            "# !!! was generated locally. It proves nothing about hardware. Development only.",
        ]
    lines += ["", "# Intel's verdict on the platform's firmware and microcode."]
    lines.append(_toml("allowed_tcb_statuses", [TcbStatus.UP_TO_DATE.value]))
    lines.append(_toml("denied_advisory_ids", []))
    lines += [
        "",
        "# The booted VM image: SHA-384 over MRTD, RTMR0, RTMR1, RTMR2 (TD firmware; ACPI",
        "# tables, so also vCPU count and memory size; kernel; command line and initrd).",
        "# Add one value per VM image or VM size you publish. The registers were:",
    ]
    lines += [f"#   {name:<6} {getattr(td, name).hex()}" for name in IMAGE_HASH_REGISTERS]
    lines.append(_toml("allowed_image_hashes", [aggregate_image_hash(td).hex()]))
    if simulated:
        lines += ["", "# The simulated platform's root (instead of Intel's) and its suite."]
        lines.append(_toml("allow_simulated_tee", True))
        lines.append(_toml("trusted_roots", list(trusted_roots or ())))
    lines += [
        "",
        "# Stricter pins, off by default: enable those that hold for the whole fleet.",
        f'# allowed_mr_seam = ["{td.mr_seam.hex()}"]  # the TDX module: host updates change it',
    ]
    if report.fmspc:
        lines.append(f'# allowed_fmspcs = ["{report.fmspc.hex()}"]  # this CPU platform only')
    lines += [
        f'# td_attributes = {{ value = "{td.td_attributes.hex()}", mask = "ffffffffffffffff" }}',
        f'# xfam = {{ value = "{td.xfam.hex()}", mask = "ffffffffffffffff" }}',
        "# max_collateral_age_seconds = 2592000  # refuse collateral older than 30 days",
    ]
    if events:
        lines += [
            "",
            "# What the bridge runs and where it sends data: RTMR3 events from its runtime log,",
            "# which replayed to the quote's RTMR3. Each value is the event digest.",
        ]
        for name in sorted(events):
            what = "container image" if name == IMAGE_DIGEST_EVENT else "configuration hash"
            lines.append(f"#   {name}: {what} {shown[name]}")
        lines.append(_toml("required_rtmr3_events", {n: sorted(d) for n, d in events.items()}))
    text = "\n".join(lines) + "\n"
    policy = _self_check(text, report, replay)
    return Draft(text, policy, tuple(warnings))


def _self_check(text: str, report: VerificationReport, replay: ReplayResult | None) -> Policy:
    try:
        policy = Policy.from_toml(text)
    except PolicyError as exc:  # pragma: no cover - a bug in this module
        raise DraftError(f"the draft is not a valid policy: {exc}") from None
    violations = [
        v for v in policy.evaluate(report, replay).violations if v.field != "allowed_tcb_statuses"
    ]
    if violations:  # pragma: no cover - a bug in this module
        raise DraftError(f"the draft rejects its own evidence: {violations}")
    return policy


# ---------------------------------------------------------------------------------------------
# The command


class _UsageError(Exception):
    """Bad arguments or unreadable input (exit 2)."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_INPUT_BYTES:
        raise _UsageError(f"{what} {path} is larger than {_MAX_INPUT_BYTES} bytes")
    return data


def _roots(paths: Sequence[str]) -> tuple[str, ...] | None:
    pems = []
    for path in paths:
        data = _read(path, "trust root")
        try:
            x509.load_pem_x509_certificate(data)
        except ValueError as exc:
            raise _UsageError(f"{path} is not a PEM certificate: {exc}") from None
        pems.append(data.decode("ascii"))
    return tuple(pems) or None


def _fetch(quote: Quote, pccs_url: str | None) -> Collateral:
    try:
        fmspc, ca_type = collateral_request_for_quote(quote)
        return CollateralFetcher(pccs_url or INTEL_PCS_URL).fetch(fmspc, ca_type)
    except (AttestationError, ValueError) as exc:
        raise _UsageError(f"cannot fetch collateral: {exc}") from None


class _FetchingSource:
    """The command's own ``QuoteCollateralSource``: Intel's PCS, or ``--pccs-url``."""

    def __init__(self, pccs_url: str | None) -> None:
        self._pccs_url = pccs_url

    def get_for_quote(self, quote: Quote, now: int) -> Collateral:
        return _fetch(quote, self._pccs_url)


def _from_quote(args: argparse.Namespace, roots: tuple[str, ...] | None) -> Draft:
    from attestation.cli import decode_quote_bytes  # the CLI is loaded already

    try:
        quote = parse_quote(decode_quote_bytes(_read(args.quote, "quote")))
        logs: list[EventLog] = [parse_event_log(_read(p, "event log")) for p in args.event_log]
        if args.collateral:
            collateral = Collateral.from_json_text(_read(args.collateral, "collateral"))
        else:
            collateral = _fetch(quote, args.pccs_url)
    except AttestationError as exc:
        raise _UsageError(str(exc)) from None
    trust = Policy(allow_unpinned_measurements=True, trusted_roots=roots)
    now = int(time.time()) if args.at is None else args.at
    report = verify_quote(
        quote, collateral, now=now, trusted_roots=trust.trusted_root_certificates()
    )
    replay = replay_against(logs, quote.td_report.rtmrs) if logs else None
    return draft_policy(
        report, replay, source=f"quote {args.quote}", trusted_roots=roots, simulated=args.simulated
    )


def _from_bridge(args: argparse.Namespace, roots: tuple[str, ...] | None) -> Draft:
    # Taking evidence needs the channel, which lives in shroud_sdk (the one place this package
    # reaches upwards, and only when this command runs).
    import ssl

    from shroud_sdk.errors import ShroudError
    from shroud_sdk.probe import take_bridge_evidence

    if args.event_log or args.collateral or args.at is not None:
        raise _UsageError("--event-log, --collateral and --at go with --quote, not --bridge")
    context = ssl.create_default_context(cafile=args.ca_file) if args.ca_file else None
    try:
        taken = take_bridge_evidence(
            args.bridge,
            audience=args.audience,
            trusted_roots=roots,
            simulated=args.simulated,
            ssl_context=context,
            # A simulated platform's collateral exists only on its bridge. A real bridge's is
            # checked against Intel's current collateral, fetched here: the client verifier
            # takes the bridge's only when it is newer (docs/attestation.md, "Collateral
            # freshness").
            collateral_source=None if args.simulated else _FetchingSource(args.pccs_url),
        )
    except (ShroudError, ValueError, OSError) as exc:
        summary = getattr(getattr(exc, "report", None), "summary", None)
        detail = f"\n{summary()}" if callable(summary) else ""
        raise DraftError(f"cannot take the bridge's evidence: {exc}{detail}") from None
    return draft_policy(
        taken.report.verification,
        taken.report.replay,
        source=f"bridge {taken.url}",
        trusted_roots=roots,
        simulated=args.simulated,
        audience=taken.audience,
    )


def run(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    """Run ``policy init``: 0 draft written, 1 evidence refused, 2 usage or unreadable input."""
    try:
        roots = _roots(args.trust_root)
        if args.simulated and roots is None:
            raise _UsageError("--simulated needs --trust-root (the simulated platform's root.pem)")
        draft = _from_bridge(args, roots) if args.bridge else _from_quote(args, roots)
    except _UsageError as exc:
        print(f"shroud-attest policy init: {exc}", file=stderr)
        return EXIT_USAGE
    except AttestationError as exc:
        print(f"shroud-attest policy init: refused: {exc}", file=stderr)
        return EXIT_REFUSED
    for warning in draft.warnings:
        print(f"warning: {warning}", file=stderr)
    if args.output:
        try:
            Path(args.output).write_text(draft.text, encoding="utf-8")
        except OSError as exc:
            print(f"shroud-attest policy init: cannot write {args.output}: {exc}", file=stderr)
            return EXIT_USAGE
        print(f"wrote a draft policy to {args.output}: review it before publishing", file=stderr)
    else:
        stdout.write(draft.text)
    return EXIT_OK
