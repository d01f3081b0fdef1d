"""RTMR3 outlives the bridge process: restarts in one TD must serve a log that still replays.

Two ``BridgeServer`` starts over one simulated TD (one provider object) stand for a
``systemctl restart`` inside a TD; the hardware path runs the same logic against the fake sysfs
RTMR attributes and the fake ``/dev/tdx_guest``. A real client (``tests.e2e.client``, which
replays the runtime log against the quote) is the judge of "clients accept the bridge".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from attestation.errors import EventLogError
from attestation.eventlog import (
    CONFIG_HASH_EVENT,
    IMAGE_DIGEST_EVENT,
    RuntimeEventLog,
    replay_against,
)
from attestation.image_hash import image_digests
from attestation.quote_parser import parse_quote
from attestation.simulated import SimulatedTdx
from bridge.config import DEFAULT_STATE_DIR, BridgeConfig, parse_args
from bridge.providers import ReportDataError, RtmrExtendError, RuntimeLogStateError
from bridge.providers.configfs_tsm import ConfigfsTsmProvider
from bridge.providers.measure import measure_bridge
from bridge.providers.rtmr import IoctlRtmrExtender, SysfsRtmrExtender
from bridge.providers.runtime_store import LOG_FILE_NAME, RuntimeLogStore
from bridge.providers.simulated import SimulatedQuoteProvider
from bridge.server import BridgeServer
from tests.bridge.fakes import FakeConfigfs, FakeRtmrSysfs, FakeTdxDevice
from tests.e2e.client import ChannelClient
from tests.vectors import tdx_case

AUDIENCE = "restart.test.local"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
REPORT_DATA = hashlib.sha512(b"restart tests").digest()


def _config(state_dir: Path | None, *extra: str) -> BridgeConfig:
    args = [
        "--quote-provider",
        "simulated",
        "--listen",
        "127.0.0.1:0",
        "--audience",
        AUDIENCE,
        "--metrics-listen",
        "off",
        "--image-digest",
        DIGEST,
        *extra,
    ]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir)]
    return parse_args(args, environ={})


@pytest.fixture
def provider() -> SimulatedQuoteProvider:
    platform = SimulatedTdx.generate(b"restart tests", now=int(time.time()))
    return SimulatedQuoteProvider(platform.td())


async def _start(provider: SimulatedQuoteProvider, config: BridgeConfig) -> BridgeServer:
    server = BridgeServer(config, quote_provider=provider)
    await server.start()
    return server


async def _handshake(server: BridgeServer, provider: SimulatedQuoteProvider) -> None:
    client = await ChannelClient.connect(
        server.url, audience=AUDIENCE, root_pem=provider.platform.root_pem
    )
    await client.close()


def _log_events(state_dir: Path) -> list[tuple[str, bytes]]:
    log = RuntimeEventLog.from_bytes((state_dir / LOG_FILE_NAME).read_bytes())
    return [(e.name or "", e.data) for e in log.events]


def _replays(log_bytes: bytes, rtmr3: bytes) -> bool:
    log = RuntimeEventLog.from_bytes(log_bytes).to_event_log()
    return replay_against([log], [bytes(48)] * 3 + [rtmr3]).register(3).matches


# -- restarts of the real server on one simulated TD ------------------------------------------


async def test_bridge_restarted_in_the_same_td_is_still_accepted_by_clients(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    first = await _start(provider, config)
    await _handshake(first, provider)
    await first.shutdown(grace=0)
    rtmr3 = provider.read_rtmr(3)

    second = await _start(provider, config)
    try:
        # The client replays the served log against the quote: it would refuse a log that
        # holds only the second process's events while RTMR3 holds both.
        await _handshake(second, provider)
    finally:
        await second.shutdown(grace=0)
    assert provider.read_rtmr(3) == rtmr3  # the same measurements were not extended twice
    assert [name for name, _ in _log_events(tmp_path / "state")] == [
        IMAGE_DIGEST_EVENT,
        CONFIG_HASH_EVENT,
    ]


async def test_restart_whose_runtime_log_was_lost_refuses_to_start(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    first = await _start(provider, config)
    await first.shutdown(grace=0)
    (tmp_path / "state" / LOG_FILE_NAME).unlink()

    second = BridgeServer(config, quote_provider=provider)
    with pytest.raises(RuntimeLogStateError) as refused:
        await second.start()
    await second.shutdown(grace=0)
    message = str(refused.value)
    assert str(tmp_path / "state" / LOG_FILE_NAME) in message
    assert "restart the TD" in message


async def test_restart_without_a_state_directory_refuses_to_start(
    provider: SimulatedQuoteProvider,
) -> None:
    config = _config(None)  # simulated default: the log lives only in the process
    first = await _start(provider, config)
    await first.shutdown(grace=0)
    second = BridgeServer(config, quote_provider=provider)
    with pytest.raises(RuntimeLogStateError, match="no state_dir"):
        await second.start()
    await second.shutdown(grace=0)


async def test_changed_configuration_is_appended_and_clients_pinning_it_refuse(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    state = tmp_path / "state"
    first = await _start(provider, _config(state))
    await first.shutdown(grace=0)
    changed = _config(state, "--upstream", "http://127.0.0.1:9/v1")
    changed = changed.model_copy(update={"image_digest": OTHER_DIGEST})
    second = await _start(provider, changed)
    try:
        await _handshake(second, provider)  # the log is honest: it replays
    finally:
        await second.shutdown(grace=0)
    events = _log_events(state)
    assert [name for name, _ in events] == [IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT] * 2
    assert events[2] == (IMAGE_DIGEST_EVENT, OTHER_DIGEST.encode("ascii"))
    log_bytes = (state / LOG_FILE_NAME).read_bytes()
    assert _replays(log_bytes, provider.read_rtmr(3))
    # ...but a TD with mixed history matches no single image: pinning clients refuse it.
    replay = replay_against(
        [RuntimeEventLog.from_bytes(log_bytes).to_event_log()],
        [bytes(48)] * 3 + [provider.read_rtmr(3)],
    )
    with pytest.raises(EventLogError, match="more than one"):
        image_digests(replay)


async def test_second_bridge_in_the_same_td_is_refused_while_the_first_runs(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    first = await _start(provider, config)
    try:
        rtmr3 = provider.read_rtmr(3)
        second = BridgeServer(config, quote_provider=provider)
        with pytest.raises(RuntimeLogStateError, match="another shroud-bridge"):
            await second.start()
        await second.shutdown(grace=0)
        assert provider.read_rtmr(3) == rtmr3  # the running bridge's log still replays
        await _handshake(first, provider)
    finally:
        await first.shutdown(grace=0)


# -- measure_bridge and the store, directly ------------------------------------------------------


def test_altered_persisted_log_refuses_to_start(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    with _store(tmp_path) as store:
        measure_bridge(provider, config, store)
    path = tmp_path / "state" / LOG_FILE_NAME
    document = json.loads(path.read_bytes())
    document["events"][0]["payload"] = OTHER_DIGEST.encode("ascii").hex()
    path.write_text(json.dumps(document))
    with _store(tmp_path) as store, pytest.raises(RuntimeLogStateError, match="does not replay"):
        measure_bridge(provider, config, store)


def test_unparseable_persisted_log_refuses_to_start(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    with _store(tmp_path) as store:
        measure_bridge(provider, config, store)
    (tmp_path / "state" / LOG_FILE_NAME).write_bytes(b"{not json")
    with _store(tmp_path) as store, pytest.raises(RuntimeLogStateError, match="cannot be parsed"):
        measure_bridge(provider, config, store)


def test_fresh_td_discards_a_stale_log(tmp_path: Path, provider: SimulatedQuoteProvider) -> None:
    config = _config(tmp_path / "state")
    with _store(tmp_path) as store:
        measure_bridge(provider, config, store)
    rebooted = SimulatedQuoteProvider(provider.platform.td())  # RTMR3 back at zero
    with _store(tmp_path) as store:
        measured = measure_bridge(rebooted, config, store)
    assert measured.extended
    assert len(_log_events(tmp_path / "state")) == 2
    assert _replays(measured.runtime_log, rebooted.read_rtmr(3))


class _FailingSecondExtension(SimulatedQuoteProvider):
    """Dies (as a crash would) after the first RTMR extension of its life."""

    extensions = 0

    def extend_rtmr(self, index: int, digest: bytes) -> None:
        self.extensions += 1
        if self.extensions == 2:
            raise RtmrExtendError("simulated crash between the two extensions")
        super().extend_rtmr(index, digest)


def test_start_interrupted_between_extensions_is_recovered_from_the_log_prefix(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    config = _config(tmp_path / "state")
    crashing = _FailingSecondExtension(provider.td)
    with _store(tmp_path) as store, pytest.raises(RtmrExtendError):
        measure_bridge(crashing, config, store)
    # The log was saved before extending: RTMR3 holds its first event only.
    with _store(tmp_path) as store:
        measured = measure_bridge(provider, config, store)
    assert _replays(measured.runtime_log, provider.read_rtmr(3))
    names = [e.name for e in RuntimeEventLog.from_bytes(measured.runtime_log).events]
    assert names == [IMAGE_DIGEST_EVENT, CONFIG_HASH_EVENT]  # completed, not duplicated
    digests = image_digests(
        replay_against(
            [RuntimeEventLog.from_bytes(measured.runtime_log).to_event_log()],
            [bytes(48)] * 3 + [provider.read_rtmr(3)],
        )
    )
    assert digests.image_digest == DIGEST


def test_runtime_log_and_state_directory_are_private(
    tmp_path: Path, provider: SimulatedQuoteProvider
) -> None:
    with _store(tmp_path) as store:
        measure_bridge(provider, _config(tmp_path / "state"), store)
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / LOG_FILE_NAME).stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path / "state")) == ["lock", LOG_FILE_NAME]  # no temp left


def test_state_directory_defaults_to_tmpfs_on_hardware_and_to_none_when_simulated() -> None:
    hardware = parse_args(["--quote-provider", "configfs-tsm", "--image-digest", DIGEST], {})
    assert hardware.effective_state_dir == DEFAULT_STATE_DIR == Path("/run/shroud-bridge")
    assert _config(None).effective_state_dir is None


@contextlib.contextmanager
def _store(tmp_path: Path) -> Iterator[RuntimeLogStore]:
    store = RuntimeLogStore.open(tmp_path / "state")
    try:
        yield store
    finally:
        store.close()


# -- the hardware path: RTMR3 read through the kernel's interfaces -------------------------------


def _hardware_config(tmp_path: Path) -> BridgeConfig:
    return parse_args(
        [
            "--quote-provider",
            "configfs-tsm",
            "--image-digest",
            DIGEST,
            "--state-dir",
            str(tmp_path / "state"),
        ],
        environ={},
    )


def test_sysfs_restart_serves_the_persisted_log_without_extending_again(tmp_path: Path) -> None:
    sysfs = FakeRtmrSysfs(tmp_path / "measurements")
    quote = tdx_case("v4-uptodate").quote
    fake = FakeConfigfs(tmp_path / "tsm", quote)
    provider = ConfigfsTsmProvider(
        tmp_path / "tsm", files=fake, rtmr_extender=SysfsRtmrExtender(sysfs.dir, files=sysfs)
    )
    config = _hardware_config(tmp_path)
    with _store(tmp_path) as store:
        first = measure_bridge(provider, config, store)
    rtmr3 = sysfs.value(3)
    with _store(tmp_path) as store:
        second = measure_bridge(provider, config, store)
    assert not second.extended
    assert sysfs.value(3) == rtmr3
    assert second.runtime_log == first.runtime_log
    assert _replays(second.runtime_log, sysfs.value(3))
    # The quote the provider hands out still carries REPORTDATA; RTMR3 is read where it lives.
    assert parse_quote(provider.get_quote(REPORT_DATA)).td_report.report_data == REPORT_DATA


def test_sysfs_register_extended_by_someone_else_refuses_to_start(tmp_path: Path) -> None:
    sysfs = FakeRtmrSysfs(tmp_path / "measurements")
    extender = SysfsRtmrExtender(sysfs.dir, files=sysfs)
    fake = FakeConfigfs(tmp_path / "tsm", tdx_case("v4-uptodate").quote)
    provider = ConfigfsTsmProvider(tmp_path / "tsm", files=fake, rtmr_extender=extender)
    extender.extend(3, hashlib.sha384(b"another process's event").digest())
    with _store(tmp_path) as store, pytest.raises(RuntimeLogStateError, match="does not exist"):
        measure_bridge(provider, _hardware_config(tmp_path), store)
    assert not (tmp_path / "state" / LOG_FILE_NAME).exists()


def test_ioctl_reads_the_register_from_a_tdreport() -> None:
    device = FakeTdxDevice(tdx_case("v4-uptodate").quote)
    extender = IoctlRtmrExtender(device=device)
    digest = hashlib.sha384(b"event").digest()
    extender.extend(3, digest)
    assert extender.read(3) == hashlib.sha384(bytes(48) + digest).digest()
    assert extender.read(2) == bytes(48)
    assert not device.open_fds


@pytest.mark.parametrize("index", [-1, 4, True])
def test_reading_a_register_that_does_not_exist_is_rejected(
    provider: SimulatedQuoteProvider, index: int
) -> None:
    with pytest.raises(ReportDataError):
        provider.read_rtmr(index)
