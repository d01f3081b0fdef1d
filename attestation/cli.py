"""``shroud-attest``: decode, verify and pin Intel TDX quotes from the command line.

A thin shell over the library: it parses arguments, reads files, calls
``attestation.quote_parser``, ``verify``, ``eventlog``, ``image_hash``, ``policy``, ``pcs`` and
``simulated``, and prints. It makes no decision of its own. Human-readable output by default
(colour only on a terminal, and never with ``NO_COLOR``), one JSON object with ``--json``.

Exit codes (``verify``): 0 accepted, 1 rejected (by verification or policy), 2 usage error or
unreadable input (a file that cannot be read or decoded, collateral that cannot be fetched).
The other commands exit 0 on success, 1 when their subject is bad (a policy file that is
invalid, an event log that does not replay to the quote), 2 for usage errors and unreadable
input.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime as dt
import gc
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

# Only what every command needs is imported here; each command imports the rest when it runs,
# so `verify` never loads the PCS client (httpx2), the simulator or the policy parser
# (pydantic) unless it uses them. docs/attestation.md ("Start-up cost") has the figures.
from attestation.quote import MEASUREMENT_REGISTERS
from attestation.report import TcbStatus

if TYPE_CHECKING:
    from attestation.collateral import Collateral
    from attestation.eventlog import EventLog, ReplayResult
    from attestation.image_hash import ImageDigests, ImageHashes
    from attestation.quote import Quote, TdReport
    from attestation.report import VerificationReport
    from attestation.validate import PolicyResult, PolicyRules

_PROG = "shroud-attest"
EXIT_ACCEPT = 0
EXIT_REJECT = 1
EXIT_USAGE = 2

# The JSON "measurements" keys, each a TdReport attribute.
MEASUREMENT_KEYS = (*MEASUREMENT_REGISTERS, "report_data", "mr_seam", "td_attributes", "xfam")
_MAX_INPUT_BYTES = 16 * 1024 * 1024  # quotes are a few KiB; refuse to slurp anything huge
_HEX_TEXT = re.compile(rb"[0-9a-fA-F\s]+")
_BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s_-]+")


class _UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2."""


def _terminal_columns() -> int:
    # What shutil.get_terminal_size answers, without importing shutil (argparse's default
    # formatter does, at every start, only to wrap help text).
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_terminal_columns() - 2)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # main() prints the program name once; a subcommand's parser adds only its own name.
        command = self.prog.removeprefix(_PROG).strip()
        raise _UsageError(f"{command}: {message}" if command else message)


# ---------------------------------------------------------------------------------------------
# Output


class _Out:
    """Plain text, optionally coloured; never colour unless writing to a terminal."""

    def __init__(self, stream: TextIO, *, colour: bool | None = None) -> None:
        self.stream = stream
        if colour is None:
            colour = stream.isatty() and "NO_COLOR" not in os.environ
        self.colour = colour

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.colour else text

    def status(self, status: str) -> str:
        codes = {"pass": "32", "fail": "31;1", "skip": "33", "match": "32", "MISMATCH": "31;1"}
        return self.paint(f"{status.upper():<8}", codes.get(status, "0"))

    def line(self, text: str = "") -> None:
        print(text, file=self.stream)

    def heading(self, text: str) -> None:
        self.line()
        self.line(self.paint(text, "1"))

    def table(self, rows: Sequence[tuple[str, str]], indent: int = 2) -> None:
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            self.line(" " * indent + f"{key:<{width}}  {value}")


def _json_out(obj: dict[str, Any], stream: TextIO) -> None:
    json.dump(obj, stream, indent=2, sort_keys=False)
    stream.write("\n")


# ---------------------------------------------------------------------------------------------
# Input


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise _UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_INPUT_BYTES:
        raise _UsageError(f"{what} {path} is larger than {_MAX_INPUT_BYTES} bytes")
    return data


def decode_quote_bytes(data: bytes) -> bytes:
    """The quote bytes from a file holding them raw, as hex, or as base64 (text may have
    surrounding whitespace). Real quotes start with a binary version field (4 or 5, LE), so a
    file that is all hex or all base64 text is text."""
    stripped = data.strip()
    if stripped and _HEX_TEXT.fullmatch(stripped):
        compact = b"".join(stripped.split())
        if len(compact) % 2 == 0:
            return bytes.fromhex(compact.decode("ascii"))
    if stripped and _BASE64_TEXT.fullmatch(stripped):
        compact = b"".join(stripped.split())
        try:
            altchars = b"-_" if (b"-" in compact or b"_" in compact) else None
            return base64.b64decode(compact, altchars=altchars, validate=True)
        except binascii.Error:
            pass
    return data


def _load_quote(path: str) -> Quote:
    from attestation.errors import AttestationError
    from attestation.quote_parser import parse_quote

    raw = decode_quote_bytes(_read_file(path, "quote"))
    try:
        return parse_quote(raw)
    except AttestationError as exc:
        raise _UsageError(f"cannot parse quote {path}: {exc}") from None


def _load_logs(paths: Sequence[str]) -> list[EventLog]:
    if not paths:
        return []
    from attestation.errors import AttestationError
    from attestation.eventlog import parse_event_log

    logs = []
    for path in paths:
        try:
            logs.append(parse_event_log(_read_file(path, "event log")))
        except AttestationError as exc:
            raise _UsageError(f"cannot parse event log {path}: {exc}") from None
    return logs


def _load_roots(paths: Sequence[str]) -> tuple[str, ...]:
    if not paths:
        return ()
    from cryptography import x509

    pems = []
    for path in paths:
        data = _read_file(path, "trust root")
        try:
            x509.load_pem_x509_certificate(data)
            pems.append(data.decode("ascii"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _UsageError(f"{path} is not a PEM certificate: {exc}") from None
    return tuple(pems)


def _load_policy(path: str | None, roots: tuple[str, ...]) -> PolicyRules:
    if path is None:
        # No policy given: a visible, explicit choice not to pin measurements (the output says
        # so). These are Policy(allow_unpinned_measurements=True)'s rules, without loading the
        # policy parser.
        from cryptography import x509

        from attestation.validate import BaselineRules

        parsed = tuple(x509.load_pem_x509_certificate(r.encode("ascii")) for r in roots)
        return BaselineRules(roots=parsed or None)
    if not Path(path).is_file():
        raise _UsageError(f"cannot read policy {path}: no such file")
    from attestation.errors import PolicyError
    from attestation.policy import Policy

    try:
        policy = Policy.load(path)
        if not roots:
            return policy
        data: dict[str, Any] = policy.model_dump()
        data["trusted_roots"] = roots
        return Policy.from_mapping(data)
    except PolicyError as exc:
        raise _UsageError(f"policy {path}: {exc}") from None


def _fetch_collateral(quote: Quote, pccs_url: str | None) -> Collateral:
    from attestation.errors import AttestationError
    from attestation.pcs import INTEL_PCS_URL, CollateralFetcher, collateral_request_for_quote

    try:
        fmspc, ca_type = collateral_request_for_quote(quote)
        fetcher = CollateralFetcher(pccs_url or INTEL_PCS_URL)
        return fetcher.fetch(fmspc, ca_type)
    except AttestationError as exc:
        raise _UsageError(f"cannot fetch collateral: {exc}") from None
    except ValueError as exc:
        raise _UsageError(f"--pccs-url: {exc}") from None


def _load_collateral(path: str) -> Collateral:
    from attestation.collateral import Collateral
    from attestation.errors import AttestationError

    try:
        return Collateral.from_json_text(_read_file(path, "collateral"))
    except AttestationError as exc:
        raise _UsageError(f"cannot parse collateral {path}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Shared rendering


def _measurements(td: TdReport) -> dict[str, str]:
    return {key: getattr(td, key).hex() for key in MEASUREMENT_KEYS}


def _replay_json(replay: ReplayResult) -> dict[str, Any]:
    return {
        f"rtmr{r.rtmr}": {
            "replayed": r.replayed.hex(),
            "expected": r.expected.hex(),
            "matches": r.matches,
            "covered": r.covered,
            "events": len(r.events),
            "diverges_at": r.diverges_at,
            "detail": r.detail,
        }
        for r in replay.registers
    }


def _replay_rows(out: _Out, replay: ReplayResult) -> None:
    for r in replay.registers:
        if not r.covered:
            out.line(f"  RTMR{r.rtmr}  {out.status('skip')}no log covers this register")
            continue
        state = "match" if r.matches else "MISMATCH"
        out.line(f"  RTMR{r.rtmr}  {out.status(state)}{r.replayed.hex()}  ({len(r.events)} events)")
        if not r.matches:
            out.line(f"                quote: {r.expected.hex()}")
            out.line(f"                {r.detail}")


def _digests_json(digests: ImageDigests | None) -> dict[str, Any] | None:
    if digests is None:
        return None
    return {
        "image_digest": digests.image_digest,
        "config_hash": digests.config_hash.hex() if digests.config_hash else None,
        "compose_hash": digests.compose_hash.hex() if digests.compose_hash else None,
        "rtmr3_events": [
            {"name": e.name, "payload": e.data.hex(), "digest": e.digest.hex()}
            for e in digests.events
        ],
    }


def _printable(data: bytes) -> str:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return f"(hex) {data.hex()}"
    return f"(text) {text}" if text.isprintable() else f"(hex) {data.hex()}"


def _safe(text: str) -> str:
    """Untrusted text (event names, certificate names, details) with control characters
    escaped, so a crafted quote or log cannot send terminal escape sequences."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _time(seconds: int) -> str:
    from attestation.certs import iso_time

    return f"{iso_time(seconds)} ({seconds})"


# ---------------------------------------------------------------------------------------------
# verify


def _cmd_verify(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from attestation.validate import evaluate_policy
    from attestation.verify import verify_quote

    quote = _load_quote(args.quote)
    logs = _load_logs(args.event_log)
    roots = _load_roots(args.trust_root)
    policy = _load_policy(args.policy, roots)
    now = int(time.time()) if args.at is None else args.at
    if args.collateral is not None:
        collateral = _load_collateral(args.collateral)
    else:
        collateral = _fetch_collateral(quote, args.pccs_url)
    report = verify_quote(
        quote,
        collateral,
        now=now,
        trusted_roots=policy.trusted_root_certificates(),
        allow_mr_service_td=policy.allow_mr_service_td_nonzero,
    )
    td = quote.td_report
    replay = _replay(logs, td.rtmrs)
    digests = _verified_digests(replay)
    result = evaluate_policy(policy, report, replay)
    # evaluate() already counts a failed report as a violation; the CLI checks both anyway so
    # its verdict never rests on one comparison alone.
    accepted = report.ok and result.ok
    if args.json:
        _json_out(
            _verify_json(quote, report, policy, args.policy, result, replay, digests, accepted),
            stdout,
        )
    else:
        _verify_human(_Out(stdout), quote, report, policy, args.policy, result, replay, accepted)
    if report.expired:
        print(_expiry_hint(now, at_given=args.at is not None), file=stderr)
    return EXIT_ACCEPT if accepted else EXIT_REJECT


def _expiry_hint(now: int, *, at_given: bool) -> str:
    from attestation.certs import iso_time

    when = iso_time(now)
    if at_given:
        return (
            f"hint: some collateral or certificate is not valid at {when}; check the --at time, "
            "or fetch fresh collateral (shroud-attest collateral fetch QUOTE -o FILE)"
        )
    return (
        f"hint: some collateral or certificate is not valid now, {when}; fetch fresh collateral "
        "(shroud-attest collateral fetch QUOTE -o FILE), or verify at the time the quote was "
        "made with --at (UNIX seconds or ISO 8601, e.g. 2025-07-19T10:00:34Z)"
    )


def _replay(logs: Sequence[EventLog], rtmrs: tuple[bytes, ...]) -> ReplayResult | None:
    if not logs:
        return None
    from attestation.eventlog import replay_against

    return replay_against(logs, rtmrs)


def _verified_digests(replay: ReplayResult | None) -> ImageDigests | None:
    """Image digests from a verified RTMR3 log; ``None`` when there is none or it is malformed
    (the policy reports a malformed one as an ``event_log`` violation)."""
    if replay is None or replay.verified_events(3) is None:
        return None
    from attestation.errors import EventLogError
    from attestation.image_hash import image_digests

    try:
        return image_digests(replay)
    except EventLogError:
        return None


def _policy_checks(result: PolicyResult) -> list[dict[str, str]]:
    failed: dict[str, list[str]] = {}
    for v in result.violations:
        failed.setdefault(v.field, []).append(f"expected {v.expected}, got {v.actual}")
    checks = []
    for field in dict.fromkeys([*result.evaluated, *failed]):
        details = failed.get(field)
        checks.append(
            {
                "name": f"policy.{field}",
                "status": "fail" if details else "pass",
                "detail": "; ".join(details) if details else "satisfied",
            }
        )
    return checks


def _verify_json(
    quote: Quote,
    report: VerificationReport,
    policy: PolicyRules,
    policy_path: str | None,
    result: PolicyResult,
    replay: ReplayResult | None,
    digests: ImageDigests | None,
    accepted: bool,
) -> dict[str, Any]:
    from attestation.image_hash import aggregate_image_hash

    checks = [{"name": c.name, "status": c.status.value, "detail": c.detail} for c in report.checks]
    obj: dict[str, Any] = {
        "verdict": "accept" if accepted else "reject",
        "tcb_status": report.tcb_status.value if report.tcb_status else None,
        "advisory_ids": list(report.advisory_ids),
        "measurements": _measurements(quote.td_report),
        "fmspc": report.fmspc.hex() if report.fmspc is not None else None,
        "quote_version": quote.version,
        "verified_at": report.verified_at,
        "image_hash": aggregate_image_hash(quote.td_report).hex(),
        "checks": checks + _policy_checks(result),
        "violations": [
            {"field": v.field, "expected": v.expected, "actual": v.actual}
            for v in result.violations
        ],
        "policy": {
            "file": policy_path,
            "pins_measurements": policy.pins_measurements,
            "allow_unpinned_measurements": policy.allow_unpinned_measurements,
        },
    }
    if replay is not None:
        obj["event_log"] = _replay_json(replay)
        obj["image_digests"] = _digests_json(digests)
    return obj


def _verify_human(
    out: _Out,
    quote: Quote,
    report: VerificationReport,
    policy: PolicyRules,
    policy_path: str | None,
    result: PolicyResult,
    replay: ReplayResult | None,
    accepted: bool,
) -> None:
    advisories = ", ".join(report.advisory_ids) or "none"
    out.table(
        [
            ("quote", f"v{quote.version}, {quote.body_type.name} body"),
            ("fmspc", report.fmspc.hex() if report.fmspc is not None else "unknown"),
            ("verified at", _time(report.verified_at or 0)),
            ("TCB status", report.tcb_status.value if report.tcb_status else "unknown"),
            ("advisories", advisories),
        ],
        indent=0,
    )
    out.heading("Verification")
    for c in report.checks:
        out.line(f"  {out.status(c.status.value)}{c.name:<24} {_safe(c.detail)}")
    out.heading(f"Policy ({policy_path})" if policy_path else "Policy (none given)")
    if not policy.pins_measurements:
        out.line(
            "  "
            + out.paint("WARNING", "33;1")
            + " no measurement is pinned: any TD on genuine hardware passes"
        )
    for check in _policy_checks(result):
        out.line(
            f"  {out.status(check['status'])}{_safe(check['name']):<40} {_safe(check['detail'])}"
        )
    if replay is not None:
        out.heading("Event log replay")
        _replay_rows(out, replay)
    out.heading("Measurements")
    out.table(list(_measurements(quote.td_report).items()))
    out.line()
    verdict = out.paint("ACCEPT", "32;1") if accepted else out.paint("REJECT", "31;1")
    out.line(f"Verdict: {verdict}")


# ---------------------------------------------------------------------------------------------
# show


def _td_attribute_flags(value: int) -> str:
    from attestation.verify import TD_ATTR_DEBUG, TD_ATTR_SEPT_VE_DISABLE

    # Intel TDX Module ABI, TDINFO_STRUCT.ATTRIBUTES bits (the verifier's constants for the two
    # it enforces).
    known = {
        TD_ATTR_DEBUG: "DEBUG",
        TD_ATTR_SEPT_VE_DISABLE: "SEPT_VE_DISABLE",
        1 << 29: "MIGRATABLE",
        1 << 30: "PKS",
        1 << 31: "KL",
        1 << 63: "PERFMON",
    }
    names = [name for bit, name in known.items() if value & bit]
    unknown = value & ~sum(known)
    if unknown:
        names.append(f"other bits {unknown:#x}")
    return ", ".join(names) or "none"


def _show_data(quote: Quote) -> dict[str, dict[str, Any]]:
    from attestation.errors import AttestationError
    from attestation.pck import split_pem_chain
    from attestation.pcs import collateral_request_for_quote

    h = quote.header
    td = quote.td_report
    sig = quote.signature_data
    cert = sig.certification
    qe = cert.qe_report
    td_fields: dict[str, Any] = {
        "tee_tcb_svn": td.tee_tcb_svn.hex(),
        "mr_seam": td.mr_seam.hex(),
        "mr_signer_seam": td.mr_signer_seam.hex(),
        "seam_attributes": td.seam_attributes.hex(),
        "td_attributes": f"{td.td_attributes.hex()} ({_td_attribute_flags(td.td_attributes_int)})",
        "xfam": td.xfam.hex(),
        "mr_td": td.mr_td.hex(),
        "mr_config_id": td.mr_config_id.hex(),
        "mr_owner": td.mr_owner.hex(),
        "mr_owner_config": td.mr_owner_config.hex(),
        "rtmr0": td.rtmr0.hex(),
        "rtmr1": td.rtmr1.hex(),
        "rtmr2": td.rtmr2.hex(),
        "rtmr3": td.rtmr3.hex(),
        "report_data": td.report_data.hex(),
    }
    if td.tee_tcb_svn_2 is not None:
        td_fields["tee_tcb_svn_2"] = td.tee_tcb_svn_2.hex()
    if td.mr_service_td is not None:
        td_fields["mr_service_td"] = td.mr_service_td.hex()
    chain: dict[str, Any] = {}
    try:
        for i, c in enumerate(split_pem_chain(cert.pck_chain_pem)):
            chain[f"certificate {i}"] = (
                f"{c.subject.rfc4514_string()} (issuer {c.issuer.rfc4514_string()}; "
                f"{c.not_valid_before_utc:%Y-%m-%d} to {c.not_valid_after_utc:%Y-%m-%d})"
            )
        fmspc, ca_type = collateral_request_for_quote(quote)
        chain["fmspc"] = fmspc.hex()
        chain["pck_ca"] = ca_type.value
    except AttestationError as exc:
        chain["error"] = str(exc)
    return {
        "header": {
            "version": h.version,
            "attestation_key_type": h.attestation_key_type,
            "tee_type": f"{h.tee_type:#x}",
            "qe_svn": h.qe_svn,
            "pce_svn": h.pce_svn,
            "qe_vendor_id": h.qe_vendor_id.hex(),
            "user_data": h.user_data.hex(),
            "body_type": quote.body_type.name,
            "quote_length": len(quote.raw),
        },
        "td_report": td_fields,
        "signature": {
            "quote_signature": sig.signature.hex(),
            "attestation_key": sig.attestation_key.hex(),
            "qe_report_signature": cert.qe_report_signature.hex(),
            "qe_auth_data": cert.qe_auth_data.hex(),
        },
        "qe_report": {
            "cpu_svn": qe.cpu_svn.hex(),
            "misc_select": f"{qe.misc_select:#010x}",
            "attributes": qe.attributes.hex(),
            "mr_enclave": qe.mr_enclave.hex(),
            "mr_signer": qe.mr_signer.hex(),
            "isv_prod_id": qe.isv_prod_id,
            "isv_svn": qe.isv_svn,
            "report_data": qe.report_data.hex(),
        },
        "pck_chain": chain,
    }


def _cmd_show(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    data = _show_data(_load_quote(args.quote))
    if args.json:
        _json_out(data, stdout)
        return EXIT_ACCEPT
    out = _Out(stdout)
    titles = {
        "header": "Header",
        "td_report": "TD report",
        "signature": "Signatures",
        "qe_report": "QE report",
        "pck_chain": "PCK certificate chain",
    }
    for section, rows in data.items():
        out.heading(titles[section])
        out.table([(k, _safe(str(v))) for k, v in rows.items()])
    return EXIT_ACCEPT


# ---------------------------------------------------------------------------------------------
# image-hash


def _cmd_image_hash(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from attestation.errors import AttestationError
    from attestation.image_hash import compute_image_hashes

    quote = _load_quote(args.quote)
    logs = _load_logs(args.event_log)
    try:
        hashes = compute_image_hashes(quote.td_report, logs)
    except AttestationError as exc:
        raise _UsageError(f"cannot read image digests: {exc}") from None
    replay_ok = hashes.replay is None or hashes.replay.ok
    if args.json:
        obj: dict[str, Any] = {
            "image_hash": hashes.aggregate.hex(),
            "image_hash_registers": ["mr_td", "rtmr0", "rtmr1", "rtmr2"],
            "measurements": _measurements(quote.td_report),
        }
        if hashes.replay is not None:
            obj["event_log"] = _replay_json(hashes.replay)
            obj["image_digests"] = _digests_json(hashes.digests)
        obj["policy_toml"] = _policy_lines(hashes)
        _json_out(obj, stdout)
        return EXIT_ACCEPT if replay_ok else EXIT_REJECT
    out = _Out(stdout)
    out.line("Aggregate image hash  SHA-384(label || MRTD || RTMR0 || RTMR1 || RTMR2)")
    out.line(f"  {hashes.aggregate.hex()}")
    out.heading("Registers")
    td = quote.td_report
    out.table([(k, getattr(td, k).hex()) for k in ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3")])
    if hashes.replay is not None:
        out.heading("Event log replay")
        _replay_rows(out, hashes.replay)
    digests = hashes.digests
    if digests is not None:
        out.heading("Image digests (from the verified RTMR3 log)")
        out.table(
            [
                ("image digest", digests.image_digest or "-"),
                ("config hash", digests.config_hash.hex() if digests.config_hash else "-"),
                ("compose hash", digests.compose_hash.hex() if digests.compose_hash else "-"),
            ]
        )
        out.heading("RTMR3 events (pin with required_rtmr3_events: name = [digest])")
        for e in digests.events:
            out.line(f"  {_safe(e.name or '(unnamed)')}")
            out.line(f"    payload  {_printable(e.data)}")
            out.line(f"    digest   {e.digest.hex()}")
    elif hashes.replay is not None:
        out.line()
        out.line("No image digests: no log replays to the quote's RTMR3.")
    out.heading("Policy lines (paste into your policy file, docs/policy.md)")
    out.line(_policy_lines(hashes).rstrip("\n"))
    return EXIT_ACCEPT if replay_ok else EXIT_REJECT


def _policy_lines(hashes: ImageHashes) -> str:
    """TOML pinning what this quote (and its verified RTMR3 log) shows: the aggregate image
    hash always; the bridge's image digest and configuration hash, and dstack's compose hash,
    when the log recorded them. Printed by a TOML writer, so any event name is quoted right."""
    import tomli_w

    from attestation.eventlog import DSTACK_COMPOSE_HASH_EVENT

    doc: dict[str, Any] = {"allowed_image_hashes": [hashes.aggregate.hex()]}
    digests = hashes.digests
    if digests is not None:
        if digests.image_digest is not None:
            doc["image_digest"] = digests.image_digest
        if digests.config_hash is not None:
            doc["config_hash"] = digests.config_hash.hex()
        compose = [e.digest.hex() for e in digests.events if e.name == DSTACK_COMPOSE_HASH_EVENT]
        if compose:
            doc["required_rtmr3_events"] = {DSTACK_COMPOSE_HASH_EVENT: compose}
    return tomli_w.dumps(doc)


# ---------------------------------------------------------------------------------------------
# collateral fetch, policy check, simulate


def _cmd_collateral_fetch(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    quote = _load_quote(args.quote)
    collateral = _fetch_collateral(quote, args.pccs_url)
    text = json.dumps(collateral.to_json(), indent=2) + "\n"
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(
        f"wrote collateral for FMSPC {collateral.fmspc.hex()} to {args.output} "
        "(unverified until used by `shroud-attest verify`)",
        file=stdout,
    )
    return EXIT_ACCEPT


def _cmd_policy_check(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    import tomllib

    from attestation.errors import PolicyError
    from attestation.policy import Policy

    if not Path(args.file).is_file():
        raise _UsageError(f"cannot read policy {args.file}: no such file")
    try:
        policy = Policy.load(args.file)
    except PolicyError as exc:
        print(f"{args.file}: {exc}", file=stderr)
        return EXIT_REJECT
    if args.json:
        # The normalised TOML is sorted and complete; its JSON twin is read back from it.
        dumped = tomllib.loads(policy.to_toml())
        dumped["pins_measurements"] = policy.pins_measurements
        _json_out(dumped, stdout)
    else:
        stdout.write(policy.to_toml())
    return EXIT_ACCEPT


def _cmd_policy_init(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from attestation import policy_init

    return policy_init.run(args, stdout, stderr)


def _parse_event_arg(value: str) -> tuple[str, bytes]:
    name, sep, payload = value.partition("=")
    if not sep:
        raise _UsageError(f"--event {value!r}: expected NAME=VALUE")
    return name, payload.encode("utf-8")


def _cmd_simulate(args: argparse.Namespace, stdout: TextIO, stderr: TextIO) -> int:
    from attestation.errors import AttestationError
    from attestation.eventlog import RuntimeEventLog
    from attestation.simulated import Measurements, SimulatedTdx

    now = int(time.time()) if args.at is None else args.at
    try:
        report_data = bytes.fromhex(args.report_data)
    except ValueError:
        raise _UsageError("--report-data must be hex") from None
    if len(report_data) > 64:
        raise _UsageError("--report-data is at most 64 bytes")
    events = [_parse_event_arg(e) for e in args.event]
    outdir = Path(args.output)
    try:
        platform = SimulatedTdx.generate(
            args.seed.encode() if args.seed else None, now=now, tcb_status=args.tcb_status
        )
        td = platform.td(Measurements())
        log = RuntimeEventLog()
        for name, payload in events:
            td.extend_rtmr(3, log.append(name, payload))
        quote = td.quote(report_data.ljust(64, b"\x00"))
        collateral = platform.collateral()
    except AttestationError as exc:
        raise _UsageError(f"simulate: {exc}") from None
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "quote.bin").write_bytes(quote)
        (outdir / "collateral.json").write_text(json.dumps(collateral, indent=2) + "\n")
        (outdir / "root.pem").write_bytes(platform.root_pem)
        if events:
            (outdir / "runtime_log.json").write_bytes(log.to_bytes())
    except OSError as exc:
        raise _UsageError(f"cannot write to {outdir}: {exc.strerror or exc}") from None
    log_arg = f" --event-log {outdir / 'runtime_log.json'}" if events else ""
    print(
        f"wrote a SIMULATED quote, its collateral and its root CA to {outdir}/\n"
        "(a simulated root is trusted only when passed explicitly)\n"
        f"verify with:\n  shroud-attest verify {outdir / 'quote.bin'} "
        f"--collateral {outdir / 'collateral.json'} --trust-root {outdir / 'root.pem'} "
        f"--at {now}{log_arg}",
        file=stdout,
    )
    return EXIT_ACCEPT


# ---------------------------------------------------------------------------------------------
# Argument parsing


def parse_time(value: str) -> int:
    """A ``--at`` value as UNIX seconds: an integer, or an ISO 8601 date-time with a UTC offset
    (``2025-07-19T10:00:34Z``, ``2025-07-19T12:00:34+02:00``). A time without an offset is
    refused rather than guessed: verifying at the wrong hour can turn "expired" into "valid".
    """
    text = value.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):
        seconds = int(text)
    else:
        try:
            when = dt.datetime.fromisoformat(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is neither UNIX seconds nor an ISO 8601 time like 2025-07-19T10:00:34Z"
            ) from None
        if when.tzinfo is None:
            raise argparse.ArgumentTypeError(
                f"{value!r} has no UTC offset; add Z or +HH:MM (e.g. {text}Z)"
            )
        seconds = int(when.timestamp())
    if seconds < 0:
        raise argparse.ArgumentTypeError("time must not be before 1970-01-01T00:00:00Z")
    return seconds


class _VersionAction(argparse.Action):
    """``--version``, reading the installed distribution's version only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("shroud-sdk")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        print(f"{_PROG} {number}")
        parser.exit()


_Command = Callable[[argparse.Namespace, TextIO, TextIO], int]


def build_parser() -> argparse.ArgumentParser:
    """The ``shroud-attest`` argument parser (exposed for documentation and tests).

    Each subcommand's parser carries its handler as ``run`` (``set_defaults(run=...)``), a
    function ``(args, stdout, stderr) -> exit code`` that imports what it needs when called:
    adding a command is one ``add_parser`` block here.
    """
    parser = _Parser(prog=_PROG, description="Decode, verify and pin TDX quotes.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    verify = sub.add_parser("verify", help="verify a quote and evaluate a policy")
    verify.set_defaults(run=_cmd_verify)
    verify.add_argument("quote", help="quote file: raw bytes, hex or base64")
    verify.add_argument("--collateral", help="QuoteCollateralV3 JSON (default: fetch)")
    verify.add_argument("--pccs-url", help="collateral service (default: Intel's PCS)")
    verify.add_argument(
        "--at",
        type=parse_time,
        help="verification time: UNIX seconds or ISO 8601 with offset (default: now)",
    )
    verify.add_argument("--policy", help="TOML policy file (default: nothing pinned)")
    verify.add_argument(
        "--event-log", action="append", default=[], help="CCEL, Shroud runtime or dstack log"
    )
    verify.add_argument(
        "--trust-root", action="append", default=[], help="PEM root to trust instead of Intel's"
    )
    verify.add_argument("--json", action="store_true", help="print one JSON object")

    show = sub.add_parser("show", help="decode every field of a quote")
    show.set_defaults(run=_cmd_show)
    show.add_argument("quote", help="quote file: raw bytes, hex or base64")
    show.add_argument("--json", action="store_true", help="print one JSON object")

    image = sub.add_parser("image-hash", help="print the values to pin in a policy")
    image.set_defaults(run=_cmd_image_hash)
    image.add_argument("quote", help="quote file: raw bytes, hex or base64")
    image.add_argument(
        "--event-log", action="append", default=[], help="CCEL, Shroud runtime or dstack log"
    )
    image.add_argument("--json", action="store_true", help="print one JSON object")

    coll = sub.add_parser("collateral", help="collateral commands")
    coll_sub = coll.add_subparsers(dest="collateral_command", required=True, parser_class=_Parser)
    fetch = coll_sub.add_parser("fetch", help="fetch a quote's collateral from PCS or a PCCS")
    fetch.set_defaults(run=_cmd_collateral_fetch)
    fetch.add_argument("quote", help="quote file: raw bytes, hex or base64")
    fetch.add_argument("--pccs-url", help="collateral service (default: Intel's PCS)")
    fetch.add_argument("-o", "--output", required=True, help="file to write the JSON to")

    sim = sub.add_parser("simulate", help="write a simulated quote, collateral and root CA")
    sim.set_defaults(run=_cmd_simulate)
    sim.add_argument("-o", "--output", required=True, help="directory to write into")
    sim.add_argument("--seed", help="make the platform deterministic")
    sim.add_argument(
        "--at", type=parse_time, help="time the platform is valid around (default: now)"
    )
    sim.add_argument(
        "--tcb-status",
        default=TcbStatus.UP_TO_DATE.value,
        choices=[s.value for s in TcbStatus],
        help="the platform's TCB status in its collateral",
    )
    sim.add_argument("--report-data", default="", help="hex, up to 64 bytes (zero padded)")
    sim.add_argument("--event", action="append", default=[], help="RTMR3 runtime event NAME=VALUE")

    pol = sub.add_parser("policy", help="policy commands")
    pol_sub = pol.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    check = pol_sub.add_parser("check", help="validate a policy file and print it normalised")
    check.set_defaults(run=_cmd_policy_check)
    check.add_argument("file", help="TOML policy file")
    check.add_argument("--json", action="store_true", help="print one JSON object")

    init = pol_sub.add_parser(
        "init", help="draft a production policy from a bridge's evidence or a quote"
    )
    init.set_defaults(run=_cmd_policy_init)
    source = init.add_mutually_exclusive_group(required=True)
    source.add_argument("--bridge", help="wss:// URL of a running bridge (one handshake)")
    source.add_argument("--quote", help="quote file (raw, hex or base64)")
    init.add_argument(
        "--event-log", action="append", default=[], help="with --quote: CCEL or runtime log"
    )
    init.add_argument("--collateral", help="with --quote: QuoteCollateralV3 JSON")
    init.add_argument("--pccs-url", help="collateral service (default: Intel's PCS)")
    init.add_argument("--audience", help="with --bridge: audience to name (default host:port)")
    init.add_argument("--ca-file", help="with --bridge: PEM CA for the TLS proxy's certificate")
    init.add_argument(
        "--trust-root", action="append", default=[], help="PEM root instead of Intel's"
    )
    init.add_argument(
        "--simulated", action="store_true", help="a simulated bridge (needs --trust-root)"
    )
    init.add_argument(
        "--at", type=parse_time, help="with --quote: verification time (UNIX seconds or ISO 8601)"
    )
    init.add_argument("-o", "--output", help="write the draft here (default: stdout)")
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``shroud-attest``; returns the exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        # --help and --version print while parsing: to the caller's stream, like everything else.
        with contextlib.redirect_stdout(out):
            args = build_parser().parse_args(argv)
        run: _Command = args.run
        return run(args, out, err)
    except _UsageError as exc:
        print(f"{_PROG}: {exc}", file=err)
        return EXIT_USAGE
    except BrokenPipeError:  # `shroud-attest show q | head`: the reader left; nothing to say
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE


def console_main() -> NoReturn:
    """The ``shroud-attest`` program: :func:`main` in a process of its own, then exit.

    A run is short and allocates almost nothing that lives in reference cycles, so the cyclic
    garbage collector only costs it: a collection pass over every object that importing
    ``cryptography`` and this package created, several times during imports and again at
    interpreter shutdown (about a sixth of the process's time; docs/attestation.md). It is
    switched off for the run (reference counting still frees everything outside a cycle; inputs
    are bounded), and what is alive at the end is frozen so shutdown does not walk it. Only for
    a process about to exit: callers in a longer-lived process use :func:`main`.
    """
    gc.disable()
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console_main()
