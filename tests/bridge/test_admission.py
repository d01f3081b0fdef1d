"""Fair admission without sockets: source keys, token buckets, connection counts, and the
client address behind trusted proxies (X-Forwarded-For)."""

from __future__ import annotations

import ipaddress

import pytest

from bridge.admission import Admission, AdmissionTicket, TokenBuckets, source_key
from bridge.client_address import ClientAddresses
from shroud_sdk.refusals import Overload, OverloadLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _ticket(result: AdmissionTicket | Overload) -> AdmissionTicket:
    assert isinstance(result, AdmissionTicket), result
    return result


def _refusal(result: object) -> Overload:
    assert isinstance(result, Overload), result
    return result


# -- source keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("/run/bridge.sock", "/run/bridge.sock"),
    ],
)
def test_source_key_counts_ipv6_by_its_64(address: str, key: str) -> None:
    assert source_key(address) == key


# -- token buckets ----------------------------------------------------------------------------


def test_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    buckets = TokenBuckets(2.0, 2.0, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert buckets.take("a") == 0.0  # refilled at the rate


def test_refused_takes_do_not_borrow_from_the_future() -> None:
    clock = Clock()
    buckets = TokenBuckets(1.0, 1.0, clock=clock)
    buckets.take("a")
    for _ in range(100):  # a flood of refused attempts
        assert buckets.take("a") > 0
    clock.now += 1.0
    assert buckets.take("a") == 0.0


def test_bucket_table_forgets_the_least_recently_used_key() -> None:
    buckets = TokenBuckets(1.0, 1.0, max_keys=3, clock=Clock())
    for key in "abcd":
        buckets.take(key)
    assert len(buckets) == 3
    assert buckets.take("a") == 0.0  # forgotten: starts again with a full bucket
    assert buckets.take("d") > 0  # remembered


# -- connection counts ------------------------------------------------------------------------


def _admission(max_connections: int = 10, per_source: int = 2, rate: float = 5.0) -> Admission:
    return Admission(
        max_connections=max_connections,
        max_connections_per_source=per_source,
        handshakes_per_second=rate,
        clock=Clock(),
    )


def test_a_source_gets_its_share_and_others_still_get_in() -> None:
    admission = _admission(per_source=2)
    first = _ticket(admission.admit("192.0.2.1", count_source=True))
    _ticket(admission.admit("192.0.2.1", count_source=True))
    refusal = _refusal(admission.admit("192.0.2.1", count_source=True))
    assert refusal.limit is OverloadLimit.CONNECTIONS_PER_SOURCE
    assert refusal.status == 429
    _ticket(admission.admit("192.0.2.2", count_source=True))
    first.release()
    first.release()  # idempotent
    _ticket(admission.admit("192.0.2.1", count_source=True))
    assert admission.open_connections == 3


def test_global_cap_counts_every_connection() -> None:
    admission = _admission(max_connections=2, per_source=2)
    _ticket(admission.admit("192.0.2.1", count_source=True))
    _ticket(admission.admit("192.0.2.2", count_source=False))
    refusal = _refusal(admission.admit("192.0.2.3", count_source=True))
    assert (refusal.limit, refusal.status) == (OverloadLimit.SESSIONS, 503)


def test_connections_of_a_trusted_proxy_count_for_the_client_it_names() -> None:
    admission = _admission(per_source=1)
    proxied = _ticket(admission.admit("10.0.0.1", count_source=False))
    assert admission.connections_from("10.0.0.1") == 0
    assert proxied.assign_source("198.51.100.1") is None
    assert admission.connections_from("198.51.100.1") == 1
    other = _ticket(admission.admit("10.0.0.1", count_source=False))
    refusal = _refusal(other.assign_source("198.51.100.1"))
    assert refusal.limit is OverloadLimit.CONNECTIONS_PER_SOURCE
    other.release()
    proxied.release()
    assert admission.connections_from("198.51.100.1") == 0
    assert admission.open_connections == 0


def test_reassigning_a_counted_ticket_moves_its_count() -> None:
    admission = _admission(per_source=1)
    ticket = _ticket(admission.admit("10.0.0.1", count_source=True))
    assert ticket.assign_source("198.51.100.1") is None
    assert admission.connections_from("10.0.0.1") == 0
    assert admission.connections_from("198.51.100.1") == 1


def test_handshake_rate_is_per_source_and_says_when_to_retry() -> None:
    admission = _admission(rate=2.0)
    assert admission.take_handshake("192.0.2.1") is None
    assert admission.take_handshake("192.0.2.1") is None
    refusal = admission.take_handshake("192.0.2.1")
    assert refusal is not None
    assert (refusal.limit, refusal.status, refusal.retry_after) == (
        OverloadLimit.HANDSHAKES_PER_SOURCE,
        429,
        1,
    )
    assert admission.take_handshake("192.0.2.2") is None


def test_a_slow_rate_asks_for_a_longer_wait() -> None:
    admission = _admission(rate=0.25)
    assert admission.take_handshake("a") is None
    refusal = admission.take_handshake("a")
    assert refusal is not None
    assert refusal.retry_after == 4


# -- the client behind trusted proxies ---------------------------------------------------------

PROXIES = ClientAddresses(
    [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48")],
    proxy_protocol=False,
)


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert PROXIES.forwarded_client("192.0.2.9", ["198.51.100.1"]) == "192.0.2.9"


def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    assert PROXIES.forwarded_client("10.1.2.3", ["198.51.100.1"]) == "198.51.100.1"


def test_only_addresses_appended_by_trusted_hops_are_believed() -> None:
    # The client wrote "203.0.113.66" itself; nginx (10.0.0.2) appended the real peer.
    header = ["203.0.113.66, 198.51.100.1"]
    assert PROXIES.forwarded_client("10.0.0.2", header) == "198.51.100.1"
    # Two trusted hops: the walk goes through both.
    chain = ["203.0.113.66, 198.51.100.1, 10.9.9.9"]
    assert PROXIES.forwarded_client("10.0.0.2", chain) == "198.51.100.1"
    # Several header lines read as one list.
    assert PROXIES.forwarded_client("10.0.0.2", ["203.0.113.66", "198.51.100.1"]) == (
        "198.51.100.1"
    )


def test_garbage_after_a_trusted_hop_counts_as_the_hop() -> None:
    assert PROXIES.forwarded_client("10.0.0.2", ["198.51.100.1, unknown"]) == "10.0.0.2"
    assert PROXIES.forwarded_client("10.0.0.2", [""]) == "10.0.0.2"
    assert PROXIES.forwarded_client("10.0.0.2", []) == "10.0.0.2"


@pytest.mark.parametrize(
    ("entry", "client"),
    [
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("198.51.100.1:5000", "198.51.100.1"),
        ("::ffff:198.51.100.1", "198.51.100.1"),
    ],
)
def test_forwarded_addresses_in_the_forms_proxies_write(entry: str, client: str) -> None:
    assert PROXIES.forwarded_client("2001:db8:ffff::1", [entry]) == client


def test_without_trusted_proxies_nothing_is_believed() -> None:
    none = ClientAddresses([], proxy_protocol=True)
    assert none.forwarded_client("10.0.0.2", ["198.51.100.1"]) == "10.0.0.2"
    assert not none.expects_proxy_header("10.0.0.2")


def test_proxy_header_is_expected_exactly_from_trusted_proxies() -> None:
    with_header = ClientAddresses([ipaddress.ip_network("10.0.0.0/8")], proxy_protocol=True)
    assert with_header.expects_proxy_header("10.0.0.5")
    assert not with_header.expects_proxy_header("192.0.2.1")
    assert not PROXIES.expects_proxy_header("10.0.0.5")
