"""Pins in the terms operators publish: ``image_digest`` and ``config_hash``.

Both are read from the RTMR3 runtime log, and only from a log that replays to the quote's RTMR3,
so a bridge cannot claim an image it did not measure. A mismatch names the key and shows the
expected and the actual value; ``shroud-attest image-hash`` prints the lines that pin a quote.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from attestation.cli import main
from attestation.errors import PolicyError
from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    RuntimeEventLog,
    parse_event_log,
    replay_against,
)
from attestation.policy import Policy
from attestation.simulated import SimulatedTdx
from attestation.verify import verify_quote
from tests.vectors import tdx_case

NOW = 1_760_000_000
IMAGE = "sha256:" + hashlib.sha256(b"shroud-bridge 1.0").hexdigest()
OTHER_IMAGE = "sha256:" + hashlib.sha256(b"shroud-bridge 0.9").hexdigest()
CONFIG = hashlib.sha384(b"audience=inference.example.com").digest()


class Bridge:
    """A simulated TD whose RTMR3 holds the bridge's image digest and configuration hash."""

    def __init__(self, tmp: Path, *, events: tuple[tuple[str, bytes], ...] | None = None) -> None:
        self.platform = SimulatedTdx.generate(b"image-pins", now=NOW)
        td = self.platform.td()
        log = RuntimeEventLog()
        for name, payload in (
            events
            if events is not None
            else ((IMAGE_DIGEST_EVENT, IMAGE.encode()), (CONFIG_HASH_EVENT, CONFIG))
        ):
            td.extend_rtmr(3, log.append(name, payload))
        self.quote = td.quote(bytes(64))
        self.log = log.to_bytes()
        self.files = {
            "quote": tmp / "quote.bin",
            "collateral": tmp / "collateral.json",
            "root": tmp / "root.pem",
            "log": tmp / "runtime_log.json",
        }
        self.files["quote"].write_bytes(self.quote)
        self.files["collateral"].write_text(json.dumps(self.platform.collateral()))
        self.files["root"].write_bytes(self.platform.root_pem)
        self.files["log"].write_bytes(self.log)

    def evaluate(self, **pins: object) -> list[tuple[str, str, str]]:
        from attestation.collateral import Collateral

        collateral = Collateral.from_json(self.platform.collateral())
        roots = (self.platform.root_pem.decode(),)
        policy = Policy(trusted_roots=roots, **pins)
        report = verify_quote(
            self.quote, collateral, now=NOW, trusted_roots=policy.trusted_root_certificates()
        )
        assert report.ok, report.failed
        quote = report.quote
        assert quote is not None
        replay = replay_against([parse_event_log(self.log)], quote.td_report.rtmrs)
        return [(v.field, v.expected, v.actual) for v in policy.evaluate(report, replay).violations]

    def verify(self, *extra: str) -> tuple[int, dict[str, Any]]:
        out, err = io.StringIO(), io.StringIO()
        f = self.files
        argv = ["verify", str(f["quote"]), "--collateral", str(f["collateral"])]
        argv += ["--trust-root", str(f["root"]), "--at", str(NOW), "--json", *extra]
        code = main(argv, stdout=out, stderr=err)
        assert out.getvalue(), err.getvalue()
        obj: dict[str, Any] = json.loads(out.getvalue())
        return code, obj


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


# --- the policy keys ---------------------------------------------------------------------------


def test_matching_image_digest_and_config_hash_pass(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    assert bridge.evaluate(image_digest=IMAGE, config_hash=CONFIG.hex()) == []


def test_another_image_is_refused_showing_both_digests(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    assert bridge.evaluate(image_digest=OTHER_IMAGE) == [("image_digest", OTHER_IMAGE, IMAGE)]


def test_another_configuration_is_refused_showing_both_hashes(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    other = hashlib.sha384(b"audience=elsewhere").hexdigest()
    assert bridge.evaluate(config_hash=other, allow_unpinned_measurements=True) == [
        ("config_hash", other, CONFIG.hex())
    ]


def test_a_log_without_the_event_is_refused_naming_the_event(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path, events=(("compose-hash", b"x"),))
    assert bridge.evaluate(image_digest=IMAGE) == [
        ("image_digest", IMAGE, f"no {IMAGE_DIGEST_EVENT!r} event in RTMR3")
    ]


def test_without_a_log_that_replays_the_pin_cannot_be_met(tmp_path: Path) -> None:
    case = tdx_case("v4-uptodate")
    from attestation.collateral import Collateral

    report = verify_quote(case.quote, Collateral.from_json(case.collateral_json), now=case.now)
    violations = Policy(image_digest=IMAGE).evaluate(report).violations
    assert [(v.field, v.actual) for v in violations] == [
        ("image_digest", "no RTMR3 event log that replays to the quote")
    ]


def test_a_release_rollout_may_allow_two_images(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    assert bridge.evaluate(image_digest=[OTHER_IMAGE, IMAGE]) == []
    policy = Policy.from_toml(f'image_digest = ["{IMAGE}", "{OTHER_IMAGE}"]\n')
    assert policy.image_digest == frozenset({IMAGE, OTHER_IMAGE})
    assert Policy.from_toml(policy.to_toml()) == policy


def test_image_digest_pins_code_and_config_hash_alone_does_not() -> None:
    assert Policy(image_digest=IMAGE.upper().replace("SHA256", "sha256")).pins_measurements
    with pytest.raises(PolicyError, match="pins no measurement"):
        Policy(config_hash=CONFIG.hex())


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("image_digest", "latest"),
        ("image_digest", "sha256:" + "0" * 63),
        ("image_digest", "md5:" + "0" * 32),
        ("config_hash", "00" * 47),
        ("image_digest", []),
    ],
)
def test_malformed_pins_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(PolicyError, match=key):
        Policy(**{key: value, "allow_unpinned_measurements": True})


# --- the CLI -------------------------------------------------------------------------------------


def test_image_hash_prints_policy_lines_that_accept_the_same_quote(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    code, out, _ = run(
        "image-hash", str(bridge.files["quote"]), "--event-log", str(bridge.files["log"])
    )
    assert code == 0
    lines = out.split("Policy lines (paste into your policy file, docs/policy.md)\n", 1)[1]
    assert f'image_digest = "{IMAGE}"' in lines
    assert f'config_hash = "{CONFIG.hex()}"' in lines
    policy_file = tmp_path / "pinned.toml"
    policy_file.write_text(lines)
    code, obj = bridge.verify("--policy", str(policy_file), "--event-log", str(bridge.files["log"]))
    assert (code, obj["verdict"]) == (0, "accept")
    # The same lines refuse the quote without the log that proves the image.
    code, obj = bridge.verify("--policy", str(policy_file))
    assert code == 1
    assert {v["field"] for v in obj["violations"]} == {"image_digest", "config_hash"}


def test_a_mismatch_through_the_cli_shows_expected_and_actual(tmp_path: Path) -> None:
    bridge = Bridge(tmp_path)
    policy_file = tmp_path / "other.toml"
    policy_file.write_text(f'image_digest = "{OTHER_IMAGE}"\n')
    code, obj = bridge.verify("--policy", str(policy_file), "--event-log", str(bridge.files["log"]))
    assert code == 1
    assert obj["violations"] == [
        {"field": "image_digest", "expected": OTHER_IMAGE, "actual": IMAGE}
    ]


def test_image_hash_lines_for_a_real_dstack_quote_pin_its_compose_hash(tmp_path: Path) -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    quote, log = str(case.directory / "quote.bin"), str(case.event_log_path)
    code, out, _ = run("image-hash", quote, "--event-log", log, "--json")
    assert code == 0
    lines = json.loads(out)["policy_toml"]
    assert "[required_rtmr3_events]" in lines
    policy_file = tmp_path / "dstack.toml"
    policy_file.write_text(lines)
    verify = ["verify", quote, "--collateral", str(case.directory / "collateral.json")]
    verify += ["--at", str(case.now), "--policy", str(policy_file)]
    assert run(*verify, "--event-log", log)[0] == 0
    other = tdx_case("v5-uptodate")  # same platform family and collateral, another TD
    verify[1] = str(other.directory / "quote.bin")
    assert run(*verify, "--event-log", log)[0] == 1
