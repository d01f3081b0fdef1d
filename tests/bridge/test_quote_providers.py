"""Quote providers against fakes of the kernel side, and the measured-configuration step.

The configfs-tsm and /dev/tdx_guest providers run against fakes that implement the kernel's
behaviour (tests/bridge/fakes.py) and hand back real quotes from the shared vectors; the
simulated provider runs the real ``attestation.simulated`` platform.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest

from attestation.collateral import Collateral
from attestation.eventlog import RuntimeEventLog, replay_against
from attestation.image_hash import image_digests
from attestation.policy import Policy, PolicyResult
from attestation.quote_parser import parse_quote
from attestation.verify import verify_quote
from bridge.config import (
    ANY_KEY_WARNING,
    BridgeConfig,
    QuoteProviderKind,
    parse_args,
    startup_warnings,
)
from bridge.providers import (
    ConcurrentReportError,
    ProviderUnavailableError,
    QuoteGenerationError,
    QuoteProvider,
    ReportDataError,
    RtmrExtendError,
    create_provider,
)
from bridge.providers import linux_abi as abi
from bridge.providers.base import quote_report_data, read_firmware_event_log
from bridge.providers.configfs_tsm import ConfigfsTsmProvider
from bridge.providers.dev_policy import DEV_POLICY_BANNER, dev_policy_text, write_policy_file
from bridge.providers.measure import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    measure_bridge,
)
from bridge.providers.rtmr import IoctlRtmrExtender, SysfsRtmrExtender
from bridge.providers.simulated import SIMULATED_WARNING, SimulatedQuoteProvider
from bridge.providers.tdx_guest import (
    TdxGuestProvider,
    build_get_quote_request,
    parse_get_quote_response,
)
from bridge.server import prepare_bridge
from tests.bridge.fakes import FakeConfigfs, FakeRtmrSysfs, FakeTdxDevice
from tests.vectors import TDX_CASES, ccel_sample, tdx_case

REPORT_DATA = hashlib.sha512(b"handshake transcript").digest()
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def v4_quote() -> bytes:
    return tdx_case("v4-uptodate").quote


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeRtmrSysfs:
    return FakeRtmrSysfs(tmp_path / "measurements")


def _configfs(
    tmp_path: Path, quote: bytes, sysfs: FakeRtmrSysfs, provider: str = "tdx_guest"
) -> tuple[ConfigfsTsmProvider, FakeConfigfs]:
    fake = FakeConfigfs(tmp_path / "tsm", quote, provider=provider)
    extender = SysfsRtmrExtender(sysfs.dir, files=sysfs)
    return ConfigfsTsmProvider(tmp_path / "tsm", files=fake, rtmr_extender=extender), fake


# -- shared checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", TDX_CASES)
def test_report_data_is_read_where_the_real_quotes_carry_it(case: str) -> None:
    vector = tdx_case(case)
    assert quote_report_data(vector.quote) == bytes.fromhex(vector.expected["report_data"])


def test_quote_of_unknown_version_is_rejected(v4_quote: bytes) -> None:
    with pytest.raises(QuoteGenerationError, match="version 3"):
        quote_report_data(b"\x03\x00" + v4_quote[2:])
    with pytest.raises(QuoteGenerationError, match="too short"):
        quote_report_data(v4_quote[:600])


# -- configfs-tsm -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["v4-uptodate", "v5-uptodate"])
def test_configfs_quote_is_over_the_requested_report_data(
    tmp_path: Path, sysfs: FakeRtmrSysfs, case: str
) -> None:
    provider, _fake = _configfs(tmp_path, tdx_case(case).quote, sysfs)
    quote = provider.get_quote(REPORT_DATA)
    assert parse_quote(quote).td_report.report_data == REPORT_DATA
    assert provider.kind is QuoteProviderKind.CONFIGFS_TSM
    assert not provider.simulated
    assert isinstance(provider, QuoteProvider)


def test_configfs_report_object_is_removed_after_success_and_failure(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)
    provider.get_quote(REPORT_DATA)
    fake.outblob_override = b""
    with pytest.raises(QuoteGenerationError, match="empty"):
        provider.get_quote(REPORT_DATA)
    assert len(fake.removed) == 2
    assert list((tmp_path / "tsm" / "report").iterdir()) == []


def test_concurrent_inblob_write_before_outblob_read_is_detected(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)
    fake.after_inblob_write = lambda d: fake.intruder_write(d, b"\x66" * 64)
    with pytest.raises(ConcurrentReportError, match="after writing inblob"):
        provider.get_quote(REPORT_DATA)


def test_concurrent_inblob_write_after_outblob_read_is_detected(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)
    fake.after_outblob_read = lambda d: fake.intruder_write(d, b"\x66" * 64)
    with pytest.raises(ConcurrentReportError, match="after reading outblob"):
        provider.get_quote(REPORT_DATA)


def test_outblob_over_someone_elses_report_data_is_rejected(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)
    fake.outblob_override = v4_quote  # a valid quote, over the vector's REPORTDATA, not ours
    with pytest.raises(QuoteGenerationError, match="different REPORTDATA"):
        provider.get_quote(REPORT_DATA)


def test_non_tdx_configfs_provider_is_refused(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, _ = _configfs(tmp_path, v4_quote, sysfs, provider="sev_guest")
    with pytest.raises(ProviderUnavailableError, match="sev_guest"):
        provider.get_quote(REPORT_DATA)


def test_garbled_generation_counter_is_rejected(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)

    def garble(directory: Path) -> None:
        (directory / "generation").write_text("one\n")

    fake.after_inblob_write = garble
    with pytest.raises(QuoteGenerationError, match="not a counter"):
        provider.get_quote(REPORT_DATA)


def test_missing_configfs_tree_is_unavailable(tmp_path: Path, sysfs: FakeRtmrSysfs) -> None:
    provider = ConfigfsTsmProvider(
        tmp_path / "absent", rtmr_extender=SysfsRtmrExtender(sysfs.dir, files=sysfs)
    )
    with pytest.raises(ProviderUnavailableError, match="no configfs-tsm"):
        provider.get_quote(REPORT_DATA)


@pytest.mark.parametrize("bad", [b"", b"\x00" * 63, b"\x00" * 65, "x" * 64, None])
def test_report_data_of_wrong_size_or_type_is_rejected_before_the_kernel(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs, bad: object
) -> None:
    provider, fake = _configfs(tmp_path, v4_quote, sysfs)
    with pytest.raises(ReportDataError) as info:
        provider.get_quote(bad)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)
    assert fake.removed == []  # nothing was created


# -- RTMR extension -----------------------------------------------------------------------------


def test_sysfs_extension_reaches_the_register(sysfs: FakeRtmrSysfs) -> None:
    digest = hashlib.sha384(b"event").digest()
    SysfsRtmrExtender(sysfs.dir, files=sysfs).extend(3, digest)
    assert sysfs.value(3) == hashlib.sha384(bytes(48) + digest).digest()


def test_lost_sysfs_extension_is_detected(tmp_path: Path) -> None:
    lossy = FakeRtmrSysfs(tmp_path / "m", lose_writes=True)
    with pytest.raises(RtmrExtendError, match="not SHA-384"):
        SysfsRtmrExtender(lossy.dir, files=lossy).extend(3, bytes(48))


def test_missing_sysfs_attribute_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ProviderUnavailableError, match="does not exist"):
        SysfsRtmrExtender(tmp_path).extend(3, bytes(48))


@pytest.mark.parametrize("index", [0, 1, 4, -1, True])
def test_boot_registers_and_bad_indexes_cannot_be_extended(
    sysfs: FakeRtmrSysfs, index: int
) -> None:
    with pytest.raises(ReportDataError, match="can be extended"):
        SysfsRtmrExtender(sysfs.dir, files=sysfs).extend(index, bytes(48))


@pytest.mark.parametrize("digest", [b"", bytes(32), bytes(64)])
def test_extension_of_wrong_size_is_rejected(sysfs: FakeRtmrSysfs, digest: bytes) -> None:
    with pytest.raises(ReportDataError, match="48 bytes"):
        SysfsRtmrExtender(sysfs.dir, files=sysfs).extend(3, digest)


def test_ioctl_extension_is_verified_through_a_tdreport(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    digest = hashlib.sha384(b"event").digest()
    IoctlRtmrExtender(device=device).extend(3, digest)
    assert device.rtmrs[3] == hashlib.sha384(bytes(48) + digest).digest()
    assert abi.TDX_CMD_EXTEND_RTMR in device.requests
    assert device.open_fds == set()


def test_ioctl_extension_of_the_wrong_register_is_detected(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    device.extend_wrong_register = True
    with pytest.raises(RtmrExtendError, match="RTMR3 after extension"):
        IoctlRtmrExtender(device=device).extend(3, bytes(48))


# -- /dev/tdx_guest -----------------------------------------------------------------------------


def test_ioctl_numbers_match_the_kernel_headers() -> None:
    # _IOWR('T', 1, 1088), _IOR('T', 3, 49), _IOR('T', 4, 16): computed by hand from ioctl.h
    assert abi.TDX_CMD_GET_REPORT0 == 0xC4405401
    assert abi.TDX_CMD_EXTEND_RTMR == 0x80315403
    assert abi.TDX_CMD_GET_QUOTE == 0x80105404


def test_tdx_guest_quote_is_over_the_requested_report_data(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    provider = TdxGuestProvider(device=device)
    quote = provider.get_quote(REPORT_DATA)
    assert parse_quote(quote).td_report.report_data == REPORT_DATA
    assert device.requests == [abi.TDX_CMD_GET_REPORT0, abi.TDX_CMD_GET_QUOTE]
    assert device.open_fds == set()
    assert provider.kind is QuoteProviderKind.TDX_GUEST


def test_tdreport_over_other_report_data_is_rejected(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    device.tamper_report_data = True
    with pytest.raises(QuoteGenerationError, match="TDREPORT"):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)
    assert device.open_fds == set()


def test_quote_from_vmm_over_other_report_data_is_rejected(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    device.tamper_quote_report_data = True
    with pytest.raises(QuoteGenerationError, match="different REPORTDATA"):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)


@pytest.mark.parametrize(
    ("status", "name"),
    [
        (abi.GET_QUOTE_IN_FLIGHT, "in flight"),
        (abi.GET_QUOTE_ERROR, "error"),
        (abi.GET_QUOTE_SERVICE_UNAVAILABLE, "unavailable"),
        (0x1234, "unknown"),
    ],
)
def test_getquote_failure_status_is_reported(v4_quote: bytes, status: int, name: str) -> None:
    device = FakeTdxDevice(v4_quote)
    device.status = status
    with pytest.raises(QuoteGenerationError, match=name):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)


@pytest.mark.parametrize("out_len", [0, 4, abi.QUOTE_REQ_BUF_SIZE])
def test_getquote_out_len_outside_the_buffer_is_rejected(v4_quote: bytes, out_len: int) -> None:
    device = FakeTdxDevice(v4_quote)
    device.out_len_override = out_len
    with pytest.raises(QuoteGenerationError, match="out_len"):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)


def test_quoting_service_error_code_is_reported(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    device.qgs_error = 0x12
    with pytest.raises(QuoteGenerationError, match="error code 0x12"):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)


def test_inconsistent_length_prefix_is_rejected(v4_quote: bytes) -> None:
    device = FakeTdxDevice(v4_quote)
    device.tamper_length_prefix = True
    with pytest.raises(QuoteGenerationError, match="length prefix"):
        TdxGuestProvider(device=device).get_quote(REPORT_DATA)


def test_missing_device_is_unavailable(v4_quote: bytes) -> None:
    provider = TdxGuestProvider("/dev/absent", device=FakeTdxDevice(v4_quote))
    with pytest.raises(ProviderUnavailableError, match="not a TDX guest"):
        provider.get_quote(REPORT_DATA)


def test_kernel_without_getquote_ioctl_is_a_typed_error(v4_quote: bytes) -> None:
    provider = TdxGuestProvider(device=FakeTdxDevice(v4_quote), get_quote_request=0x1)
    with pytest.raises(QuoteGenerationError, match="TDX_CMD_GET_QUOTE"):
        provider.get_quote(REPORT_DATA)


def test_qgs_message_round_trip_and_truncation(v4_quote: bytes) -> None:
    request = build_get_quote_request(bytes(1024))
    assert len(request) == 4 + 16 + 8 + 1024
    assert int.from_bytes(request[:4], "big") == len(request) - 4
    with pytest.raises(QuoteGenerationError, match="too short"):
        parse_get_quote_response(b"\x00" * 10)


@pytest.mark.parametrize("cut", [1, 100])
def test_truncated_qgs_response_is_rejected(v4_quote: bytes, cut: int) -> None:
    body = b"\x00" * 16 + v4_quote
    message = b"\x01\x00\x00\x00\x01\x00\x00\x00" + (16 + 8 + len(body)).to_bytes(4, "little")
    message += b"\x00" * 4 + (16).to_bytes(4, "little") + len(v4_quote).to_bytes(4, "little")
    message += body
    good = len(message).to_bytes(4, "big") + message
    assert parse_get_quote_response(good) == v4_quote
    truncated = good[:-cut]
    with pytest.raises(QuoteGenerationError):
        parse_get_quote_response(truncated)


# -- simulated ----------------------------------------------------------------------------------


def _sim_config(tmp_path: Path, *extra: str) -> BridgeConfig:
    return parse_args(
        ["--quote-provider", "simulated", "--simulated-dir", str(tmp_path / "sim"), *extra],
        environ={},
    )


def test_simulated_provider_warns_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        provider = create_provider(_sim_config(tmp_path))
    assert provider.simulated
    assert provider.kind is QuoteProviderKind.SIMULATED
    assert SIMULATED_WARNING in caplog.text


def test_bridge_start_logs_every_configuration_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _sim_config(tmp_path, "--evidence-lifetime", "7200")
    with caplog.at_level(logging.WARNING, logger="bridge.server"):
        prepare_bridge(config)
    logged = [r.getMessage() for r in caplog.records if r.name == "bridge.server"]
    assert logged == startup_warnings(config)
    assert ANY_KEY_WARNING in logged
    assert any("evidence_lifetime is 7200 s" in line for line in logged)


def test_simulated_quote_is_over_report_data_and_current_rtmr3(tmp_path: Path) -> None:
    provider = create_provider(_sim_config(tmp_path))
    digest = hashlib.sha384(b"event").digest()
    provider.extend_rtmr(3, digest)
    report = parse_quote(provider.get_quote(REPORT_DATA)).td_report
    assert report.report_data == REPORT_DATA
    assert report.rtmr3 == hashlib.sha384(bytes(48) + digest).digest()
    assert provider.firmware_event_log() is None


def test_simulated_platform_persists_its_root(tmp_path: Path) -> None:
    first = create_provider(_sim_config(tmp_path))
    second = create_provider(_sim_config(tmp_path))
    assert isinstance(first, SimulatedQuoteProvider)
    assert isinstance(second, SimulatedQuoteProvider)
    assert first.platform.root_pem == second.platform.root_pem
    assert (tmp_path / "sim" / "root.pem").read_bytes() == first.platform.root_pem


def test_simulated_seed_is_deterministic(tmp_path: Path) -> None:
    a = SimulatedQuoteProvider.from_config(
        parse_args(["--quote-provider", "simulated", "--simulated-seed", "s1"], environ={}),
        now=1_700_000_000,
    )
    b = SimulatedQuoteProvider.from_config(
        parse_args(["--quote-provider", "simulated", "--simulated-seed", "s1"], environ={}),
        now=1_700_000_000,
    )
    assert a.platform.root_pem == b.platform.root_pem


def test_corrupt_simulated_platform_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "platform.json").write_text("{}")
    with pytest.raises(ProviderUnavailableError, match="simulated platform"):
        create_provider(_sim_config(tmp_path))


@pytest.mark.parametrize("bad", [b"\x00" * 63, "x" * 64])
def test_simulated_provider_rejects_bad_report_data(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ReportDataError):
        create_provider(_sim_config(tmp_path)).get_quote(bad)  # type: ignore[arg-type]


# -- measured configuration --------------------------------------------------------------------


def _replay(log_bytes: bytes) -> bytes:
    rtmr = bytes(48)
    for event in RuntimeEventLog.from_bytes(log_bytes).events:
        rtmr = hashlib.sha384(rtmr + event.digest).digest()
    return rtmr


def test_measured_configuration_replays_to_the_quoted_rtmr3(tmp_path: Path) -> None:
    config = _sim_config(tmp_path, "--image-digest", DIGEST, "--upstream", "http://vllm:8000/v1")
    provider = create_provider(config)
    measured = measure_bridge(provider, config)
    report = parse_quote(provider.get_quote(REPORT_DATA)).td_report
    assert report.rtmr3 == _replay(measured.runtime_log)
    # The attestation side reads back exactly what the bridge measured.
    log = RuntimeEventLog.from_bytes(measured.runtime_log).to_event_log()
    replay = replay_against([log], [report.rtmr0, report.rtmr1, report.rtmr2, report.rtmr3])
    digests = image_digests(replay)
    assert digests.image_digest == DIGEST
    assert digests.config_hash == hashlib.sha384(measured.config_document).digest()
    assert [e.name for e in digests.events] == [IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT]


def test_simulated_bridge_without_image_digest_records_only_the_config(tmp_path: Path) -> None:
    config = _sim_config(tmp_path)
    provider = create_provider(config)
    measured = measure_bridge(provider, config)
    events = RuntimeEventLog.from_bytes(measured.runtime_log).events
    assert [e.name for e in events] == [CONFIG_HASH_EVENT]
    assert measured.image_digest is None


def test_measured_configuration_on_hardware_path_extends_rtmr3(
    tmp_path: Path, v4_quote: bytes, sysfs: FakeRtmrSysfs
) -> None:
    provider, _ = _configfs(tmp_path, v4_quote, sysfs)
    config = parse_args(["--quote-provider", "configfs-tsm", "--image-digest", DIGEST], environ={})
    measured = measure_bridge(provider, config)
    assert sysfs.value(3) == _replay(measured.runtime_log)
    assert sysfs.value(2) == bytes(48)


def test_a_bridge_that_cannot_measure_itself_does_not_start(
    tmp_path: Path, v4_quote: bytes
) -> None:
    lossy = FakeRtmrSysfs(tmp_path / "m", lose_writes=True)
    fake = FakeConfigfs(tmp_path / "tsm", v4_quote)
    provider = ConfigfsTsmProvider(
        tmp_path / "tsm", files=fake, rtmr_extender=SysfsRtmrExtender(lossy.dir, files=lossy)
    )
    config = parse_args(["--quote-provider", "configfs-tsm", "--image-digest", DIGEST], environ={})
    with pytest.raises(RtmrExtendError):
        measure_bridge(provider, config)


def test_firmware_event_log_is_read_when_present(tmp_path: Path) -> None:
    data = tmp_path / "CCEL.data"
    data.write_bytes(ccel_sample())
    log = read_firmware_event_log(str(data), str(tmp_path / "no-table"))
    assert log is not None
    assert log.data == ccel_sample()
    assert log.table is None
    assert read_firmware_event_log(str(tmp_path / "absent"), None) is None


# -- development policy -------------------------------------------------------------------------


def _evaluate_with(policy_path: Path, provider: SimulatedQuoteProvider, log: bytes) -> PolicyResult:
    now = int(time.time())
    quote = provider.get_quote(REPORT_DATA)
    policy = Policy.load(policy_path)
    report = verify_quote(
        quote,
        Collateral.from_json(provider.collateral(now)),
        now=now,
        trusted_roots=policy.trusted_root_certificates(),
    )
    td = parse_quote(quote).td_report
    replay = replay_against(
        [RuntimeEventLog.from_bytes(log).to_event_log()], [td.rtmr0, td.rtmr1, td.rtmr2, td.rtmr3]
    )
    return policy.evaluate(report, replay)


def test_dev_policy_accepts_this_bridge(tmp_path: Path) -> None:
    config = _sim_config(tmp_path, "--image-digest", DIGEST)
    provider = SimulatedQuoteProvider.from_config(config)
    measured = measure_bridge(provider, config)
    path = write_policy_file(tmp_path / "dev-policy.toml", dev_policy_text(provider, measured))
    assert path.read_text().startswith(DEV_POLICY_BANNER)
    assert Policy.load(path).allow_simulated_tee
    result = _evaluate_with(path, provider, measured.runtime_log)
    assert result.ok, result.violations


def test_dev_policy_rejects_a_bridge_sending_data_elsewhere(tmp_path: Path) -> None:
    config = _sim_config(tmp_path, "--image-digest", DIGEST)
    provider = SimulatedQuoteProvider.from_config(config)
    path = write_policy_file(
        tmp_path / "p.toml", dev_policy_text(provider, measure_bridge(provider, config))
    )
    # Same platform (same root, same MRTD), restarted with another upstream.
    other_config = _sim_config(
        tmp_path, "--image-digest", DIGEST, "--upstream", "https://evil.example"
    )
    other = SimulatedQuoteProvider.from_config(other_config)
    result = _evaluate_with(path, other, measure_bridge(other, other_config).runtime_log)
    assert not result.ok
    assert any(v.field == f"required_rtmr3_events.{CONFIG_HASH_EVENT}" for v in result.violations)


def test_dev_policy_rejects_another_simulated_platform(tmp_path: Path) -> None:
    config = _sim_config(tmp_path, "--image-digest", DIGEST)
    provider = SimulatedQuoteProvider.from_config(config)
    path = write_policy_file(
        tmp_path / "p.toml", dev_policy_text(provider, measure_bridge(provider, config))
    )
    stranger_config = parse_args(
        ["--quote-provider", "simulated", "--image-digest", DIGEST], environ={}
    )
    stranger = SimulatedQuoteProvider.from_config(stranger_config)
    log = measure_bridge(stranger, stranger_config).runtime_log
    assert not _evaluate_with(path, stranger, log).ok
