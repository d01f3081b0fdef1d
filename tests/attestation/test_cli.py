"""shroud-attest end to end: every real vector, event logs, policies, exit codes, JSON shape."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attestation.cli import MEASUREMENT_KEYS, decode_quote_bytes, main
from tests.data.pcs.server import RecordedPcs, serve_recorded_pcs
from tests.vectors import REPO_ROOT, TDX_CASES, TdxCase, ccel_sample, tdx_case

EXAMPLE_POLICY = str(REPO_ROOT / "examples" / "policy.toml")
# expected.json names the RTMRs rt_mrN; the CLI's JSON uses rtmrN.
_EXPECTED_KEY = {f"rtmr{i}": f"rt_mr{i}" for i in range(4)}


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(*argv, "--json")
    assert out, err
    return code, json.loads(out)


def verify_args(case: TdxCase, *extra: str, quote: Path | None = None) -> list[str]:
    return [
        "verify",
        str(quote or case.directory / "quote.bin"),
        "--collateral",
        str(case.directory / "collateral.json"),
        "--at",
        str(case.now),
        *extra,
    ]


# --- every vector ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TDX_CASES)
def test_every_vector_gets_its_expected_verdict_through_the_cli(name: str) -> None:
    case = tdx_case(name)
    code, obj = run_json(*verify_args(case))
    accept = case.expected["expect_accept_default_policy"]
    assert obj["verdict"] == ("accept" if accept else "reject")
    assert code == (0 if accept else 1)
    ref = case.expected["reference_result"]
    if ref["ok"]:
        assert obj["tcb_status"] == ref["tcb_status"]
        assert obj["advisory_ids"] == ref["advisory_ids"]
    assert obj["quote_version"] == case.expected["quote_version"]
    assert obj["fmspc"] == case.expected["fmspc"].lower()
    for key in MEASUREMENT_KEYS:
        assert obj["measurements"][key] == case.expected[_EXPECTED_KEY.get(key, key)], key


def test_json_has_the_documented_shape() -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    code, obj = run_json(*verify_args(case, "--event-log", str(case.event_log_path)))
    assert code == 0
    for key in ("verdict", "tcb_status", "advisory_ids", "measurements", "fmspc"):
        assert key in obj
    assert {"quote_version", "checks", "event_log"} <= obj.keys()
    assert set(obj["measurements"]) == set(MEASUREMENT_KEYS)
    assert all(len(v) in (16, 96, 128) for v in obj["measurements"].values())
    assert obj["checks"]
    for check in obj["checks"]:
        assert set(check) == {"name", "status", "detail"}
        assert check["status"] in ("pass", "fail", "skip")
    names = [c["name"] for c in obj["checks"]]
    assert "quote_signature" in names
    assert "policy.allowed_tcb_statuses" in names
    assert obj["policy"] == {
        "file": None,
        "pins_measurements": False,
        "allow_unpinned_measurements": True,
    }


# --- event logs ------------------------------------------------------------------------------


def test_dstack_event_log_replays_all_four_rtmrs_through_the_cli() -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    code, obj = run_json(*verify_args(case, "--event-log", str(case.event_log_path)))
    assert code == 0
    for i in range(4):
        entry = obj["event_log"][f"rtmr{i}"]
        assert entry["matches"] is True
        assert entry["replayed"] == case.expected[f"rt_mr{i}"]
    compose = obj["image_digests"]["compose_hash"]
    assert compose == "3763bc34552cf3a27ff71ad5f7a90471562a1a2df552dfc1998cba2d60da27e7"


def test_tampered_event_log_rejects_a_genuine_quote(tmp_path: Path) -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    records = json.loads(case.event_log_path.read_bytes())
    for r in records:
        if r["event"] == "compose-hash":
            r["event_payload"] = "00" * 32
    log = tmp_path / "log.json"
    log.write_text(json.dumps(records))
    code, obj = run_json(*verify_args(case, "--event-log", str(log)))
    assert code == 1
    assert obj["verdict"] == "reject"
    assert obj["event_log"]["rtmr3"]["matches"] is False
    assert obj["event_log"]["rtmr0"]["matches"] is True
    assert any(v["field"] == "event_log" for v in obj["violations"])


def test_raw_ccel_with_padding_is_accepted_as_an_event_log(tmp_path: Path) -> None:
    # The sample CCEL comes from another TD, so it parses but RTMR0/1 do not replay.
    ccel = tmp_path / "CCEL"
    ccel.write_bytes(ccel_sample())
    case = tdx_case("v4-uptodate")
    code, obj = run_json(*verify_args(case, "--event-log", str(ccel)))
    assert code == 1
    assert obj["event_log"]["rtmr0"]["matches"] is False
    assert obj["event_log"]["rtmr0"]["events"] == 13
    assert obj["event_log"]["rtmr3"]["covered"] is False


def test_crafted_event_name_cannot_inject_terminal_escapes(tmp_path: Path) -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    records = json.loads(case.event_log_path.read_bytes())
    records[-1]["event"] = "\x1b]0;owned\x07"
    log = tmp_path / "log.json"
    log.write_text(json.dumps(records))
    code, out, _ = run("image-hash", str(case.directory / "quote.bin"), "--event-log", str(log))
    assert code == 1  # the renamed event no longer replays
    assert "\x1b" not in out
    records[-1]["event"] = "LIUM_MINER_HOTKEY"
    code, out, _ = run("verify", *verify_args(case, "--event-log", str(log))[1:])
    assert "\x1b" not in out


# --- policies --------------------------------------------------------------------------------


def test_example_policy_accepts_the_dstack_vector_with_its_log() -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    args = verify_args(case, "--policy", EXAMPLE_POLICY, "--event-log", str(case.event_log_path))
    code, obj = run_json(*args)
    assert code == 0, obj["violations"]
    assert obj["policy"]["pins_measurements"] is True
    code, out, _ = run(*args)
    assert code == 0
    assert "Verdict: ACCEPT" in out
    assert "WARNING" not in out


def test_example_policy_rejects_the_dstack_vector_without_its_log() -> None:
    code, obj = run_json(*verify_args(tdx_case("v4-dstack-eventlog"), "--policy", EXAMPLE_POLICY))
    assert code == 1
    assert [v["field"] for v in obj["violations"]] == ["required_rtmr3_events.compose-hash"]


def test_example_policy_rejects_another_td_with_every_violation() -> None:
    code, obj = run_json(*verify_args(tdx_case("v4-uptodate"), "--policy", EXAMPLE_POLICY))
    assert code == 1
    fields = {v["field"] for v in obj["violations"]}
    assert {"measurements.mr_td", "allowed_image_hashes", "allowed_mr_seam"} <= fields
    failed = {c["name"] for c in obj["checks"] if c["status"] == "fail"}
    assert "policy.measurements.mr_td" in failed


def test_outofdate_is_accepted_only_by_a_policy_that_allows_it(tmp_path: Path) -> None:
    case = tdx_case("neg-outofdate")
    policy = tmp_path / "p.toml"
    policy.write_text(
        'allow_unpinned_measurements = true\nallowed_tcb_statuses = ["UpToDate", "OutOfDate"]\n'
    )
    code, obj = run_json(*verify_args(case, "--policy", str(policy)))
    assert code == 0
    assert obj["advisory_ids"] == ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]


def test_without_a_policy_the_output_warns_that_nothing_is_pinned() -> None:
    code, out, _ = run(*verify_args(tdx_case("v4-uptodate")))
    assert code == 0
    assert "WARNING no measurement is pinned" in out
    assert "Verdict: ACCEPT" in out
    assert "\x1b" not in out  # not a terminal: no colour


def test_policy_check_prints_the_normalised_policy() -> None:
    code, out, _ = run("policy", "check", EXAMPLE_POLICY)
    assert code == 0
    assert "allow_unpinned_measurements = false" in out
    assert '"90c06f000000"' in out
    code, obj = run_json("policy", "check", EXAMPLE_POLICY)
    assert obj["pins_measurements"] is True
    assert obj["allowed_fmspcs"] == ["90c06f000000"]


def test_policy_check_rejects_an_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("allow_unpinned_measurements = true\nalowed_fmspcs = []\n")
    code, _, err = run("policy", "check", str(bad))
    assert code == 1
    assert "alowed_fmspcs: unknown key" in err


# --- simulated TDX and trust roots -----------------------------------------------------------


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    outdir = tmp_path_factory.mktemp("sim")
    code, out, err = run(
        "simulate",
        "-o",
        str(outdir),
        "--seed",
        "cli tests",
        "--at",
        "1760000000",
        "--report-data",
        "ab" * 8,
        "--event",
        "shroud.image-digest=sha256:" + "cd" * 32,
    )
    assert code == 0, err
    assert "shroud-attest verify" in out
    return outdir


def _sim_verify(outdir: Path, *extra: str) -> list[str]:
    return [
        "verify",
        str(outdir / "quote.bin"),
        "--collateral",
        str(outdir / "collateral.json"),
        "--at",
        "1760000000",
        *extra,
    ]


def test_simulated_quote_verifies_only_with_its_root_passed(simulated: Path) -> None:
    code, obj = run_json(*_sim_verify(simulated))
    assert code == 1
    assert obj["verdict"] == "reject"
    code, obj = run_json(*_sim_verify(simulated, "--trust-root", str(simulated / "root.pem")))
    assert code == 0, [c for c in obj["checks"] if c["status"] != "pass"]
    assert obj["measurements"]["report_data"].startswith("ab" * 8)


def test_simulated_runtime_log_replays_and_yields_the_image_digest(simulated: Path) -> None:
    log = str(simulated / "runtime_log.json")
    code, obj = run_json(
        *_sim_verify(simulated, "--trust-root", str(simulated / "root.pem"), "--event-log", log)
    )
    assert code == 0
    assert obj["event_log"]["rtmr3"]["matches"] is True
    assert obj["image_digests"]["image_digest"] == "sha256:" + "cd" * 32
    code, obj = run_json("image-hash", str(simulated / "quote.bin"), "--event-log", log)
    assert code == 0
    assert obj["image_digests"]["rtmr3_events"][0]["name"] == "shroud.image-digest"


def test_policy_trust_root_and_cli_trust_root_agree(simulated: Path, tmp_path: Path) -> None:
    # A policy that pins Intel's root (the default) plus --trust-root: the CLI root replaces it.
    policy = tmp_path / "p.toml"
    policy.write_text("allow_unpinned_measurements = true\n")
    args = _sim_verify(simulated, "--policy", str(policy), "--trust-root")
    code, _ = run_json(*args, str(simulated / "root.pem"))
    assert code == 0
    code, _ = run_json(*_sim_verify(simulated, "--policy", str(policy)))
    assert code == 1


# --- quote encodings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "encode",
    [
        lambda q: q.hex().encode(),
        lambda q: q.hex().upper().encode() + b"\n",
        lambda q: base64.b64encode(q) + b"\n",
        lambda q: base64.urlsafe_b64encode(q),
        lambda q: q + bytes(1000),
    ],
)
def test_quote_as_hex_base64_or_padded_raw_is_read(encode: Any, tmp_path: Path) -> None:
    case = tdx_case("v4-uptodate")
    path = tmp_path / "quote"
    path.write_bytes(encode(case.quote))
    code, obj = run_json(*verify_args(case, quote=path))
    assert code == 0
    assert obj["verdict"] == "accept"


def test_decode_leaves_raw_quotes_alone() -> None:
    quote = tdx_case("v5-uptodate").quote
    assert decode_quote_bytes(quote) == quote


# --- show and image-hash ---------------------------------------------------------------------


def test_show_decodes_every_td_report_field() -> None:
    case = tdx_case("v5-uptodate")
    code, obj = run_json("show", str(case.directory / "quote.bin"))
    assert code == 0
    td = obj["td_report"]
    assert td["mr_td"] == case.expected["mr_td"]
    assert td["mr_service_td"] == case.expected["mr_service_td"]
    assert td["tee_tcb_svn_2"] == case.expected["tee_tcb_svn2"]
    assert obj["header"]["version"] == 5
    assert obj["pck_chain"]["fmspc"] == case.expected["fmspc"].lower()
    code, out, _ = run("show", str(case.directory / "quote.bin"))
    assert code == 0
    assert "SEPT_VE_DISABLE" in out
    assert case.expected["mr_seam"] in out


def test_show_names_the_debug_attribute() -> None:
    code, out, _ = run("show", str(tdx_case("neg-debug-td").directory / "quote.bin"))
    assert code == 0
    assert "(DEBUG, SEPT_VE_DISABLE)" in out


def test_image_hash_prints_the_values_to_pin() -> None:
    case = tdx_case("v4-dstack-eventlog")
    assert case.event_log_path is not None
    quote = str(case.directory / "quote.bin")
    code, obj = run_json("image-hash", quote, "--event-log", str(case.event_log_path))
    assert code == 0
    assert obj["image_hash"] == (
        "1f25cbed76290ea38a7d2fd49f4202b64674036a135d242170c660ab27f69cd46f"
        "24cf5af8c8c0254113d45040299a90"
    )
    names = [e["name"] for e in obj["image_digests"]["rtmr3_events"]]
    assert "compose-hash" in names
    code, out, _ = run("image-hash", quote)
    assert code == 0
    assert obj["image_hash"] in out


# --- collateral fetching (recorded Intel responses on 127.0.0.1) -----------------------------


@pytest.fixture
def pcs() -> Iterator[RecordedPcs]:
    with serve_recorded_pcs() as state:
        yield state


def test_collateral_fetch_writes_the_vectors_collateral(pcs: RecordedPcs, tmp_path: Path) -> None:
    case = tdx_case("v4-uptodate")
    pcs.case = case.name
    out = tmp_path / "collateral.json"
    code, text, err = run(
        "collateral", "fetch", str(case.directory / "quote.bin"), "--pccs-url", pcs.url, "-o",
        str(out),
    )  # fmt: skip
    assert code == 0, err
    assert "unverified" in text
    assert json.loads(out.read_text()) == case.collateral_json


def test_verify_without_collateral_fetches_it(pcs: RecordedPcs) -> None:
    case = tdx_case("v5-uptodate")
    pcs.case = case.name
    quote = str(case.directory / "quote.bin")
    args = ["verify", quote, "--pccs-url", pcs.url, "--at", str(case.now)]
    code, obj = run_json(*args)
    assert code == 0
    assert obj["verdict"] == "accept"


def test_unreachable_collateral_service_is_exit_2(tmp_path: Path) -> None:
    quote = str(tdx_case("v4-uptodate").directory / "quote.bin")
    code, _, err = run("verify", quote, "--pccs-url", "http://127.0.0.1:9", "--at", "1")
    assert code == 2
    assert "cannot fetch collateral" in err
    code, _, err = run("collateral", "fetch", quote, "--pccs-url", "ftp://x", "-o", "x")
    assert code == 2


# --- exit codes for bad usage and unreadable input -------------------------------------------


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    case = tdx_case("v4-uptodate")
    quote, coll = str(case.directory / "quote.bin"), str(case.directory / "collateral.json")
    garbage = tmp / "garbage"
    garbage.write_bytes(b"\x04\x00\x02\x00" + b"\x00" * 20)
    bad_json = tmp / "bad.json"
    bad_json.write_text("{not json")
    bad_policy = tmp / "bad.toml"
    bad_policy.write_text("nope = 1\n")
    return [
        ([], "required"),
        (["frobnicate"], "invalid choice"),
        (["verify"], "required"),
        (["verify", str(tmp / "missing"), "--collateral", coll], "cannot read quote"),
        (["verify", str(garbage), "--collateral", coll], "cannot parse quote"),
        (["verify", quote, "--collateral", str(bad_json)], "cannot parse collateral"),
        (["verify", quote, "--collateral", coll, "--at", "soon"], "neither UNIX seconds nor"),
        (["verify", quote, "--collateral", coll, "--at", "-5"], "before 1970"),
        (["verify", quote, "--collateral", coll, "--at", "2025-07-19T10:00:34"], "no UTC offset"),
        (["verify", quote, "--collateral", coll, "--policy", str(bad_policy)], "unknown key"),
        (["verify", quote, "--collateral", coll, "--policy", str(tmp / "none")], "no such file"),
        (["verify", quote, "--collateral", coll, "--event-log", str(bad_json)], "event log"),
        (["verify", quote, "--collateral", coll, "--trust-root", str(bad_json)], "PEM"),
        (["image-hash", quote, "--event-log", str(garbage)], "event log"),
        (["show", str(garbage)], "cannot parse quote"),
        (["policy", "check", str(tmp / "none.toml")], "no such file"),
        (["simulate", "-o", str(tmp / "s"), "--report-data", "zz"], "hex"),
        (["simulate", "-o", str(tmp / "s"), "--event", "novalue"], "NAME=VALUE"),
    ]


def test_usage_errors_and_unreadable_input_exit_2(tmp_path: Path) -> None:
    for argv, message in _bad_inputs(tmp_path):
        code, _, err = run(*argv)
        assert code == 2, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err
        # The program names itself once, and a subcommand adds only its own name.
        assert err.count("shroud-attest") == 1, err
        assert err.startswith("shroud-attest: "), err


def test_help_exits_0() -> None:
    assert run("--help")[0] == 0


@pytest.mark.parametrize(("name", "expected_code"), [("v4-uptodate", 0), ("neg-debug-td", 1)])
def test_console_script_module_runs(name: str, expected_code: int) -> None:
    # The program's entry point (console_main, as the console script) exits with main's code,
    # with the garbage collector off for the process: a reject must still exit 1.
    case = tdx_case(name)
    proc = subprocess.run(
        [sys.executable, "-m", "attestation.cli", *verify_args(case), "--json"],
        capture_output=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == expected_code, proc.stderr
    assert json.loads(proc.stdout)["verdict"] == ("accept" if expected_code == 0 else "reject")


@pytest.mark.parametrize(
    ("name", "expected_code"), [("v4-dstack-eventlog", 0), ("neg-debug-td", 1)]
)
def test_example_script_verifies_a_vector(name: str, expected_code: int) -> None:
    proc = subprocess.run(
        ["bash", str(REPO_ROOT / "examples" / "verify_vector.sh"), name, "--json"],
        capture_output=True,
        check=False,
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert proc.returncode == expected_code, proc.stderr
    obj = json.loads(proc.stdout)
    assert obj["verdict"] == ("accept" if expected_code == 0 else "reject")
    if name == "v4-dstack-eventlog":
        assert obj["policy"]["pins_measurements"] is True
        assert all(obj["event_log"][f"rtmr{i}"]["matches"] for i in range(4))


def test_duplicate_image_digest_events_reject_without_crashing(tmp_path: Path) -> None:
    outdir = tmp_path / "sim"
    image = "shroud.image-digest=sha256:" + "cd" * 32
    code, _, err = run(
        "simulate", "-o", str(outdir), "--seed", "dup", "--at", "1760000000",
        "--event", image, "--event", image,
    )  # fmt: skip
    assert code == 0, err
    args = _sim_verify(outdir, "--trust-root", str(outdir / "root.pem"))
    code, obj = run_json(*args, "--event-log", str(outdir / "runtime_log.json"))
    assert code == 1
    assert obj["event_log"]["rtmr3"]["matches"] is True
    assert obj["image_digests"] is None
    assert [v["field"] for v in obj["violations"]] == ["event_log"]
    assert "more than one" in obj["violations"][0]["actual"]


@pytest.mark.parametrize("offset", [0, 2, 4, 47, 48, 300, 631, 632, 700, 1000, 1500, 3000, 4900])
def test_corrupted_quote_is_rejected_or_unreadable_never_a_crash(
    offset: int, tmp_path: Path
) -> None:
    case = tdx_case("v4-uptodate")
    data = bytearray(case.quote)
    data[offset] ^= 0x41
    path = tmp_path / "quote.bin"
    path.write_bytes(bytes(data))
    code, out, err = run(*verify_args(case, quote=path))
    assert code in (1, 2), (offset, out)
    assert ("Verdict: REJECT" in out) if code == 1 else ("shroud-attest:" in err)
    path.write_bytes(case.quote[:offset])
    code, _, err = run(*verify_args(case, quote=path))
    assert code == 2
    assert "Traceback" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = verify_args(tdx_case("v4-uptodate"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    terminal = _Terminal()
    assert main(args, stdout=terminal, stderr=io.StringIO()) == 0
    assert "\x1b[32;1mACCEPT" in terminal.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    terminal = _Terminal()
    assert main(args, stdout=terminal, stderr=io.StringIO()) == 0
    assert "\x1b" not in terminal.getvalue()


def test_policy_check_json_is_sorted_and_stable() -> None:
    _, first = run_json("policy", "check", EXAMPLE_POLICY)
    assert first["denied_advisory_ids"] == sorted(first["denied_advisory_ids"])
    assert first["allow_unpinned_measurements"] is False
    assert first["required_rtmr3_events"]["compose-hash"] == [
        "b883bee0b216618b1ce0e7a1bb4a9379b486cef8aadf0c682cb6e80c083f7982"
        "dbf104183c24a74693d860f4ffc8b72f"
    ]


# --- times, hints, version -------------------------------------------------------------------


def test_at_accepts_iso_8601_with_an_offset_as_the_same_instant() -> None:
    case = tdx_case("v4-uptodate")
    code_unix, by_unix = run_json(*verify_args(case))
    iso = dt.datetime.fromtimestamp(case.now, dt.UTC).isoformat().replace("+00:00", "Z")
    shifted = dt.datetime.fromtimestamp(case.now, dt.timezone(dt.timedelta(hours=2))).isoformat()
    for value in (iso, shifted):
        argv = verify_args(case)
        argv[argv.index("--at") + 1] = value
        code, obj = run_json(*argv)
        assert (code, obj["verified_at"]) == (code_unix, case.now), value
        assert obj["checks"] == by_unix["checks"]


def test_expired_collateral_is_explained_in_iso_8601_with_a_hint() -> None:
    case = tdx_case("v4-uptodate")
    later = case.now + 400 * 86400
    argv = verify_args(case)
    argv[argv.index("--at") + 1] = str(later)
    code, out, err = run(*argv)
    assert code == 1
    stamp = dt.datetime.fromtimestamp(later, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"expired before {stamp}" in out
    assert str(later) not in out.replace(f"({later})", "")  # raw seconds only beside ISO
    assert err.startswith("hint: ")
    assert "--at time" in err
    assert "fresh collateral" in err
    # Without --at the hint offers --at itself; a verdict that is not about time has no hint.
    argv.remove("--at")
    argv.remove(str(later))
    _, _, err_now = run(*argv)
    assert "--at (UNIX seconds or ISO 8601" in err_now
    assert run(*verify_args(tdx_case("neg-debug-td")))[2] == ""


def test_version_names_the_program_and_the_release() -> None:
    code, out, err = run("--version")
    assert code == 0
    assert err == ""
    assert re.fullmatch(r"shroud-attest \d+\.\d+\.\d+\S*\n", out), out


def test_verify_without_a_policy_file_loads_neither_pydantic_nor_the_pcs_client() -> None:
    # Start-up cost is part of the product (benchmarks/attestation.py): a fresh process that
    # verifies with --collateral must not import what only other commands need.
    case = tdx_case("v4-uptodate")
    heavy = ["pydantic", "httpx2", "attestation.simulated", "attestation.pcs", "attestation.policy"]
    program = (
        "import io, sys\n"
        "from attestation.cli import main\n"
        f"code = main({verify_args(case)!r}, stdout=io.StringIO())\n"
        f"print(code, [m for m in {heavy!r} if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert done.stdout.split(maxsplit=1) == ["0", "[]\n"], done.stdout + done.stderr
