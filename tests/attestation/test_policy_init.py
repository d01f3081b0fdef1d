"""``shroud-attest policy init --quote``: a commented draft that pins what verified evidence shows.

The bridge path (``--bridge``, one real handshake through nginx) is tested in tests/deploy.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from attestation.cli import main
from attestation.eventlog import RuntimeEventLog
from attestation.policy import Policy
from attestation.simulated import Measurements, SimulatedTdx
from tests.attestation.conftest import SIM_NOW
from tests.vectors import tdx_case

IMAGE = "sha256:" + "ab" * 32
OTHER_IMAGE = "sha256:" + "cd" * 32
CONFIG = b"c" * 48


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def _evidence(
    directory: Path,
    sim: SimulatedTdx,
    *,
    image: str = IMAGE,
    log_events: tuple[tuple[str, bytes], ...] | None = None,
) -> list[str]:
    """A simulated quote whose RTMR3 holds ``image`` and ``CONFIG``; the policy-init flags."""
    directory.mkdir(parents=True, exist_ok=True)
    td = sim.td(Measurements())
    log = RuntimeEventLog()
    for name, payload in (("shroud.image-digest", image.encode()), ("shroud.config-hash", CONFIG)):
        td.extend_rtmr(3, log.append(name, payload))
    served = log
    if log_events is not None:  # a log that is not the one RTMR3 was extended with
        served = RuntimeEventLog()
        for name, payload in log_events:
            served.append(name, payload)
    (directory / "quote.bin").write_bytes(td.quote(bytes(64)))
    (directory / "log.json").write_bytes(served.to_bytes())
    (directory / "collateral.json").write_text(json.dumps(sim.collateral()))
    (directory / "root.pem").write_bytes(sim.root_pem)
    return [
        "--quote",
        str(directory / "quote.bin"),
        "--event-log",
        str(directory / "log.json"),
        "--collateral",
        str(directory / "collateral.json"),
        "--trust-root",
        str(directory / "root.pem"),
        "--simulated",
        "--at",
        str(SIM_NOW),
    ]


def _verify(directory: Path, policy: Path) -> int:
    code, _, _ = run(
        "verify",
        str(directory / "quote.bin"),
        "--event-log",
        str(directory / "log.json"),
        "--collateral",
        str(directory / "collateral.json"),
        "--trust-root",
        str(directory / "root.pem"),
        "--policy",
        str(policy),
        "--at",
        str(SIM_NOW),
    )
    return code


def test_draft_pins_image_hash_and_bridge_events_and_accepts_only_that_image(
    tmp_path: Path, sim: SimulatedTdx
) -> None:
    args = _evidence(tmp_path / "release", sim)
    draft = tmp_path / "policy.toml"
    code, out, err = run("policy", "init", *args, "-o", str(draft))
    assert code == 0, err
    assert out == ""
    text = draft.read_text()
    assert text.startswith("# Shroud attestation policy: DRAFT")
    assert "SIMULATED TEE" in text
    assert IMAGE in text  # said in clear in a comment, next to the digest pinned
    policy = Policy.load(draft)
    assert policy.allow_simulated_tee
    assert set(policy.required_rtmr3_events) == {"shroud.image-digest", "shroud.config-hash"}
    assert policy.allowed_image_hashes is not None
    assert len(policy.allowed_image_hashes) == 1
    assert _verify(tmp_path / "release", draft) == 0
    # Another image on the same platform and VM: refused by the draft.
    _evidence(tmp_path / "other", sim, image=OTHER_IMAGE)
    assert _verify(tmp_path / "other", draft) == 1


def test_runtime_log_that_does_not_replay_yields_no_draft(
    tmp_path: Path, sim: SimulatedTdx
) -> None:
    forged = (("shroud.image-digest", OTHER_IMAGE.encode()), ("shroud.config-hash", CONFIG))
    args = _evidence(tmp_path, sim, log_events=forged)
    code, out, err = run("policy", "init", *args)
    assert code == 1
    assert out == ""
    assert "does not replay" in err


def test_quote_that_does_not_verify_yields_no_draft(tmp_path: Path, sim: SimulatedTdx) -> None:
    args = _evidence(tmp_path, sim)
    other_root = tmp_path / "other-root.pem"
    other_root.write_bytes(SimulatedTdx.generate(b"another platform", now=SIM_NOW).root_pem)
    args[args.index(str(tmp_path / "root.pem"))] = str(other_root)
    code, out, err = run("policy", "init", *args)
    assert code == 1
    assert out == ""
    assert "did not verify" in err


def test_simulated_evidence_needs_its_root_named(tmp_path: Path, sim: SimulatedTdx) -> None:
    args = _evidence(tmp_path, sim)
    at = args.index("--trust-root")
    del args[at : at + 2]
    code, _, err = run("policy", "init", *args)
    assert code == 2
    assert "--simulated needs --trust-root" in err


def _init_from_vector(name: str) -> tuple[str, str]:
    """``policy init --quote`` on a real vector, at its time; the draft and the warnings."""
    case = tdx_case(name)
    code, out, err = run(
        "policy",
        "init",
        "--quote",
        str(case.directory / "quote.bin"),
        "--collateral",
        str(case.directory / "collateral.json"),
        "--at",
        str(case.now),
    )
    assert code == 0, err
    return out, err


def test_real_quote_draft_trusts_intel_and_warns_about_what_it_cannot_pin() -> None:
    out, err = _init_from_vector("v4-uptodate")
    policy = Policy.from_toml(out)
    assert policy.trusted_roots is None  # Intel's root
    assert not policy.allow_simulated_tee
    assert policy.allowed_image_hashes is not None
    assert "no verified shroud.image-digest event" in err
    assert "# allowed_mr_seam" in out  # stricter pins offered, not imposed


def test_out_of_date_platform_is_reported_and_left_to_the_operator() -> None:
    out, err = _init_from_vector("neg-outofdate")
    assert "TCB status is OutOfDate" in err
    assert Policy.from_toml(out).allowed_tcb_statuses == {"UpToDate"}
