"""The SDK verifier on attested-key evidence (docs/protocol.md §3.6): window, lifetime, mode
policy and the process-wide cache of accepted verdicts. Real simulated quotes, no network.

Each refusal asserts the ``check`` that fired; each cache rule has a test that fails when the
rule is removed (a refusal turned into an acceptance, an entry outliving its collateral, an
acceptance shared with another policy or other collateral, a window not rechecked on a hit).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import shroud_sdk.verifier as verifier_module
from attestation._spec import HEADER_SIZE as QUOTE_HEADER_LEN
from attestation.collateral import Collateral
from attestation.errors import PolicyError
from attestation.policy import MeasurementPins, Policy, PolicyInput, Violation
from attestation.quote import Quote
from attestation.simulated import SimulatedTd, SimulatedTdx
from attestation.verify import verify_quote
from shroud_sdk.channel.constants import Suite
from shroud_sdk.channel.evidence import AttestedKey, Evidence, EvidenceMode
from shroud_sdk.channel.handshake import compute_key_report_data
from shroud_sdk.errors import AttestationFailedError
from shroud_sdk.session import SessionConfig
from shroud_sdk.verdicts import PROCESS_VERDICTS, VerdictCache
from shroud_sdk.verifier import CLOCK_SKEW_SECONDS, AttestationReport, AttestationVerifier

NOW = int(time.time())
SIM = Suite.SIMULATED_TEE_P256_HKDF_SHA256_AES256GCM
LIFETIME = 600


class Clock:
    """A settable clock for the verifier."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def platform() -> SimulatedTdx:
    return SimulatedTdx.generate(b"evidence-mode-tests", now=NOW)


@pytest.fixture
def td(platform: SimulatedTdx) -> SimulatedTd:
    return platform.td()


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts full quote verifications made by the SDK verifier."""
    calls: list[int] = []

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return verify_quote(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(verifier_module, "verify_quote", counting)
    return calls


def _policy(platform: SimulatedTdx, td: SimulatedTd, **changes: object) -> Policy:
    fields: dict[str, object] = {
        "trusted_roots": (platform.root_pem.decode("ascii"),),
        "measurements": MeasurementPins(mr_td=frozenset({td.measurements.mr_td.hex()})),
        "allow_simulated_tee": True,
    }
    fields.update(changes)
    return Policy(**fields)


def _collateral_bytes(platform: SimulatedTdx, **options: object) -> bytes:
    return json.dumps(platform.collateral(now=NOW, **options)).encode()  # type: ignore[arg-type]


def _key_evidence(
    platform: SimulatedTdx,
    td: SimulatedTd,
    *,
    not_before: int = NOW,
    lifetime: int = LIFETIME,
    collateral: bytes | None = b"default",
) -> Evidence:
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    attested = AttestedKey(public, not_before, not_before + lifetime)
    quote = td.quote(compute_key_report_data(attested))
    shipped = _collateral_bytes(platform) if collateral == b"default" else collateral
    return Evidence("tdx", quote, (), shipped, attested)


def _verifier(
    policy: Policy, clock: Clock, cache: VerdictCache[object] | None = None
) -> AttestationVerifier:
    own: VerdictCache[object] = VerdictCache() if cache is None else cache  # empty is falsy
    return AttestationVerifier(policy, clock=clock, verdicts=own)


def _refused(
    verifier: AttestationVerifier, evidence: Evidence, check: str, suite: int = SIM
) -> None:
    with pytest.raises(AttestationFailedError) as info:
        verifier(evidence, suite)
    assert info.value.check == check, info.value


# -- what a verification of attested-key evidence reports ------------------------------------


def test_attested_key_evidence_proves_its_key_binding_and_reports_mode_and_window(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    evidence = _key_evidence(platform, td)
    assert evidence.attested_key is not None
    result = _verifier(_policy(platform, td), Clock())(evidence, SIM)
    assert result.report_data == compute_key_report_data(evidence.attested_key)
    report = result.report
    assert isinstance(report, AttestationReport)
    assert report.ok
    assert report.evidence_mode is EvidenceMode.ATTESTED_KEY
    assert report.evidence_window == (NOW, NOW + LIFETIME)
    assert "evidence: attested-key" in report.summary()


def test_fresh_evidence_is_reported_as_fresh(platform: SimulatedTdx, td: SimulatedTd) -> None:
    evidence = Evidence("tdx", td.quote(bytes(64)), (), _collateral_bytes(platform))
    report = _verifier(_policy(platform, td), Clock())(evidence, SIM).report
    assert report.evidence_mode is EvidenceMode.FRESH
    assert report.evidence_window is None


# -- the window ----------------------------------------------------------------------------------


def test_expired_attested_key_is_refused(platform: SimulatedTdx, td: SimulatedTd) -> None:
    evidence = _key_evidence(platform, td)
    clock = Clock(NOW + LIFETIME - 1)
    verifier = _verifier(_policy(platform, td), clock)
    verifier(evidence, SIM)  # the last second of the window
    clock.now = NOW + LIFETIME
    _refused(verifier, evidence, "evidence-window")


def test_not_yet_valid_attested_key_is_refused_beyond_the_skew_allowance(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    evidence = _key_evidence(platform, td)
    clock = Clock(NOW - CLOCK_SKEW_SECONDS)
    verifier = _verifier(_policy(platform, td), clock)
    verifier(evidence, SIM)  # a client clock up to 60 s behind the bridge's is fine
    clock.now = NOW - CLOCK_SKEW_SECONDS - 1
    _refused(verifier, evidence, "evidence-window")


def test_window_longer_than_the_policy_maximum_is_refused(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    evidence = _key_evidence(platform, td, lifetime=3601)
    _refused(_verifier(_policy(platform, td), Clock()), evidence, "evidence-lifetime")
    longer = _policy(platform, td, max_evidence_lifetime_seconds=7200)
    assert _verifier(longer, Clock())(evidence, SIM).report.ok
    exactly = _key_evidence(platform, td, lifetime=3600)
    assert _verifier(_policy(platform, td), Clock())(exactly, SIM).report.ok


def test_fresh_quote_policy_refuses_attested_key_evidence(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    policy = _policy(platform, td, fresh_quote=True)
    verifier = _verifier(policy, Clock())
    assert verifier.requires_fresh_quote
    _refused(verifier, _key_evidence(platform, td), "evidence-mode")
    # It still accepts a quote over the handshake.
    fresh = Evidence("tdx", td.quote(bytes(64)), (), _collateral_bytes(platform))
    assert verifier(fresh, SIM).report.ok


def test_the_session_asks_for_the_mode_the_policy_names(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    for fresh in (False, True):
        verifier = AttestationVerifier(_policy(platform, td, fresh_quote=fresh))
        config = SessionConfig(url="ws://127.0.0.1:1/", verifier=verifier)
        assert config.client_config(verifier).fresh_quote is fresh


# -- the verdict cache ----------------------------------------------------------------------------


def test_second_client_in_the_process_verifies_only_the_window_and_policy(
    platform: SimulatedTdx, td: SimulatedTd, verify_calls: list[int]
) -> None:
    cache: VerdictCache[object] = VerdictCache()
    evidence = _key_evidence(platform, td)
    first = _verifier(_policy(platform, td), Clock(), cache)(evidence, SIM)
    # A separately built, equal policy (as a second client loading the same file would).
    second = _verifier(_policy(platform, td), Clock(NOW + 10), cache)(evidence, SIM)
    assert verify_calls == [1]
    assert second.report.verification is first.report.verification  # the cached verification
    assert second.report.ok  # judged again by its own policy
    assert cache.hits == 1


def test_verifiers_share_the_process_wide_cache_by_default(
    platform: SimulatedTdx, td: SimulatedTd, verify_calls: list[int]
) -> None:
    evidence = _key_evidence(platform, td)
    policy = _policy(platform, td)
    AttestationVerifier(policy, clock=Clock())(evidence, SIM)
    hits = PROCESS_VERDICTS.hits
    AttestationVerifier(policy, clock=Clock())(evidence, SIM)
    assert PROCESS_VERDICTS.hits == hits + 1
    assert verify_calls == [1]


def test_fresh_evidence_is_never_cached(
    platform: SimulatedTdx, td: SimulatedTd, verify_calls: list[int]
) -> None:
    cache: VerdictCache[object] = VerdictCache()
    verifier = _verifier(_policy(platform, td), Clock(), cache)
    evidence = Evidence("tdx", td.quote(bytes(64)), (), _collateral_bytes(platform))
    verifier(evidence, SIM)
    verifier(evidence, SIM)
    assert verify_calls == [1, 1]
    assert len(cache) == 0


def test_cache_never_turns_a_refusal_into_an_acceptance(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    cache: VerdictCache[object] = VerdictCache()
    wrong_pin = _policy(platform, td, measurements=MeasurementPins(mr_td=frozenset({"00" * 48})))
    verifier = _verifier(wrong_pin, Clock(), cache)
    evidence = _key_evidence(platform, td)
    _refused(verifier, evidence, "policy")
    _refused(verifier, evidence, "policy")  # verified again, refused again
    assert len(cache) == 0


def test_cached_acceptance_still_checks_the_window(platform: SimulatedTdx, td: SimulatedTd) -> None:
    cache: VerdictCache[object] = VerdictCache()
    clock = Clock()
    verifier = _verifier(_policy(platform, td), clock, cache)
    evidence = _key_evidence(platform, td)
    verifier(evidence, SIM)
    clock.now = NOW + LIFETIME
    _refused(verifier, evidence, "evidence-window")
    strict = _verifier(_policy(platform, td, max_evidence_lifetime_seconds=300), Clock(), cache)
    _refused(strict, evidence, "evidence-lifetime")


def test_cached_acceptance_is_not_shared_with_another_policy(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    cache: VerdictCache[object] = VerdictCache()
    evidence = _key_evidence(platform, td)
    _verifier(_policy(platform, td), Clock(), cache)(evidence, SIM)
    other = _policy(platform, td, measurements=MeasurementPins(mr_td=frozenset({"00" * 48})))
    _refused(_verifier(other, Clock(), cache), evidence, "policy")
    # A rule applied while verifying, before the policy's own evaluation: not reused either.
    no_simulation = _policy(platform, td, allow_simulated_tee=False)
    _refused(_verifier(no_simulation, Clock(), cache), evidence, "simulated-tee")


class ReleaseList:
    """A custom check that reads state the user may change at run time (a release list)."""

    name = "release_list"
    pins_measurements = False

    def __init__(self) -> None:
        self.withdrawn = False

    def __call__(self, evidence: PolicyInput) -> list[Violation]:
        if self.withdrawn:
            return [Violation("release_list", "a listed release", "a withdrawn release")]
        return []


def test_cached_acceptance_still_runs_the_policy_and_its_custom_checks(
    platform: SimulatedTdx, td: SimulatedTd, verify_calls: list[int]
) -> None:
    # A cached verdict spares the quote and collateral work only: the policy is judged again
    # on every handshake, so a custom check whose answer changes (a release withdrawn from a
    # list it reads) is heard at once, not after the attested key's window.
    releases = ReleaseList()
    cache: VerdictCache[object] = VerdictCache()
    verifier = _verifier(_policy(platform, td, custom_checks=(releases,)), Clock(), cache)
    evidence = _key_evidence(platform, td)
    first = verifier(evidence, SIM)
    assert verifier(evidence, SIM).report.ok  # from the cache
    assert verify_calls == [1]
    releases.withdrawn = True
    _refused(verifier, evidence, "policy")
    releases.withdrawn = False
    again = verifier(evidence, SIM)
    assert again.report.ok
    assert again.report_data == first.report_data
    assert verify_calls == [1]


def test_cached_acceptance_is_not_shared_with_another_suite(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # Accepted on the simulated suite, the same evidence offered on the real suite must meet
    # the suite rule again (simulated evidence never passes on suite 1, protocol.md §1).
    cache: VerdictCache[object] = VerdictCache()
    verifier = _verifier(_policy(platform, td), Clock(), cache)
    evidence = _key_evidence(platform, td)
    verifier(evidence, SIM)
    _refused(verifier, evidence, "simulated-tee", Suite.P256_HKDF_SHA256_AES256GCM)


def test_cached_acceptance_is_not_shared_with_other_evidence(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # Same collateral, suite and policy; one bit of the signed TD report changed, so the
    # quote's signature no longer verifies.
    cache: VerdictCache[object] = VerdictCache()
    verifier = _verifier(_policy(platform, td), Clock(), cache)
    evidence = _key_evidence(platform, td)
    verifier(evidence, SIM)
    forged = bytearray(evidence.quote)
    forged[QUOTE_HEADER_LEN + 16] ^= 1  # inside the TD report body
    _refused(verifier, replace(evidence, quote=bytes(forged)), "verification")


def test_cached_acceptance_is_not_shared_with_other_collateral(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    cache: VerdictCache[object] = VerdictCache()
    evidence = _key_evidence(platform, td)
    verifier = _verifier(_policy(platform, td), Clock(), cache)
    verifier(evidence, SIM)
    revoked = replace(evidence, collateral=_collateral_bytes(platform, revoke_pck=True))
    _refused(verifier, revoked, "verification")


def test_cached_acceptance_ends_with_the_collateral(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # The collateral (issued an hour ago) expires 100 s into the key's 600 s window.
    short = _collateral_bytes(platform, lifetime=3600 + 100)
    evidence = _key_evidence(platform, td, collateral=short)
    cache: VerdictCache[object] = VerdictCache()
    clock = Clock()
    verifier = _verifier(_policy(platform, td), clock, cache)
    first = verifier(evidence, SIM)
    last = first.report.verification.valid_until
    assert last is not None
    assert NOW + 98 <= last <= NOW + 100  # a CRL's nextUpdate second itself is already stale
    clock.now = last
    # Still valid: served from the cache.
    assert verifier(evidence, SIM).report.verification is first.report.verification
    clock.now = last + 1
    _refused(verifier, evidence, "verification")


def test_cached_acceptance_ends_with_the_policy_collateral_age(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    evidence = _key_evidence(platform, td)  # collateral issued an hour before NOW
    cache: VerdictCache[object] = VerdictCache()
    clock = Clock()
    verifier = _verifier(_policy(platform, td, max_collateral_age_seconds=3600 + 50), clock, cache)
    verifier(evidence, SIM)
    clock.now = NOW + 51
    _refused(verifier, evidence, "policy")


def test_collateral_from_a_source_is_cached_by_its_content(
    platform: SimulatedTdx, td: SimulatedTd, verify_calls: list[int]
) -> None:
    class Source:
        def __init__(self) -> None:
            self.calls = 0

        def get_for_quote(self, quote: Quote, now: int) -> Collateral:
            self.calls += 1
            return Collateral.from_json(platform.collateral(now=NOW))

    source = Source()
    cache: VerdictCache[object] = VerdictCache()
    evidence = _key_evidence(platform, td, collateral=None)
    policy = _policy(platform, td)
    for _ in range(2):
        verifier = AttestationVerifier(
            policy, collateral_source=source, clock=Clock(), verdicts=cache
        )
        assert verifier(evidence, SIM).report.ok
    assert source.calls == 2  # the source decides each time (it may have news)
    assert verify_calls == [1]


def test_cached_acceptance_of_shipped_collateral_yields_to_newer_own_collateral(
    platform: SimulatedTdx, td: SimulatedTd
) -> None:
    # A verdict reached with the bridge's collateral (newer than the client's own at the time)
    # must not outlive the client's source learning of a TCB recovery: the freshness rule
    # (attestation.freshness) is applied on every handshake, before any cached verdict.
    class Source:
        def __init__(self) -> None:
            self.collateral = Collateral.from_json(
                platform.collateral(now=NOW - 2 * 86_400, tcb_evaluation_data_number=17)
            )

        def get_for_quote(self, quote: Quote, now: int) -> Collateral:
            return self.collateral

    source = Source()
    cache: VerdictCache[object] = VerdictCache()
    shipped = _collateral_bytes(platform, tcb_evaluation_data_number=17)
    evidence = _key_evidence(platform, td, collateral=shipped)
    verifier = AttestationVerifier(
        _policy(platform, td), collateral_source=source, clock=Clock(), verdicts=cache
    )
    first = verifier(evidence, SIM)
    assert first.report.ok
    assert first.report.collateral_origin == "evidence"
    source.collateral = Collateral.from_json(
        platform.collateral(now=NOW, tcb_status="OutOfDate", tcb_evaluation_data_number=18)
    )
    _refused(verifier, evidence, "policy")


def test_cache_ignores_a_clock_set_back_before_the_verification() -> None:
    cache: VerdictCache[object] = VerdictCache()
    cache.put("k", "accepted", verified_at=100, expires_at=200)
    assert cache.get("k", 99) is None
    assert cache.get("k", 100) == "accepted"
    assert cache.get("k", 199) == "accepted"
    assert cache.get("k", 200) is None
    assert len(cache) == 0  # expired entries are dropped


def test_cache_is_bounded() -> None:
    cache: VerdictCache[object] = VerdictCache(max_entries=2)
    for key in ("a", "b", "c"):
        cache.put(key, key, verified_at=0, expires_at=10)
    assert len(cache) == 2
    assert cache.get("a", 1) is None
    assert cache.get("c", 1) == "c"


# -- the policy keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"max_evidence_lifetime_seconds": 0},
        {"max_evidence_lifetime_seconds": 86401},
        {"max_evidence_lifetime_seconds": "600"},
        {"fresh_quote": "yes"},
    ],
)
def test_bad_evidence_policy_values_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        Policy(allow_unpinned_measurements=True, **change)


def test_evidence_policy_keys_round_trip_through_toml() -> None:
    policy = Policy(
        allow_unpinned_measurements=True, max_evidence_lifetime_seconds=900, fresh_quote=True
    )
    again = Policy.from_toml(policy.to_toml())
    assert again.max_evidence_lifetime_seconds == 900
    assert again.fresh_quote is True
    assert Policy(allow_unpinned_measurements=True).max_evidence_lifetime_seconds == 3600


def test_adding_a_verdict_drops_the_expired_ones() -> None:
    # A long-running client meets a new attested key at every rotation: the verdicts of the
    # old keys must not stay in memory until 256 newer ones push them out.
    cache: VerdictCache[object] = VerdictCache()
    cache.put("rotated-1", "old", verified_at=0, expires_at=600)
    cache.put("rotated-2", "old", verified_at=300, expires_at=900)
    cache.put("current", "new", verified_at=600, expires_at=1200)  # "rotated-1" ended at 600
    assert len(cache) == 2
    assert cache.get("rotated-2", 700) == "old"
    cache.put("next", "newer", verified_at=900, expires_at=1500)
    assert len(cache) == 2
    assert cache.get("current", 901) == "new"
