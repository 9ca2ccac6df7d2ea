"""The routing table: XOR buckets, least-recently-seen eviction, replacement caches,
subnet caps, refresh effects."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.dht.routing import (
    ID_SIZE,
    Contact,
    K,
    PingContact,
    RefreshBucket,
    RoutingTable,
    bucket_index,
    distance,
    subnet_of,
)
from zmesh.errors import LocalProtocolError
from zmesh.rng import DeterministicRng

OWN = bytes(ID_SIZE)


def id_in_bucket(index: int, n: int) -> bytes:
    """A distinct id (by ``n``) whose distance from OWN has its top bit at ``index``."""
    assert index >= 12
    return ((1 << index) | (n << (index - 12))).to_bytes(ID_SIZE, "big")


def ip(n: int) -> str:
    """A distinct /24 per ``n``."""
    return f"10.{(n >> 8) & 255}.{n & 255}.1"


def table(**kw: object) -> RoutingTable:
    return RoutingTable(OWN, DeterministicRng(1, b"table"), 0.0, **kw)  # type: ignore[arg-type]


def test_distance_and_bucket_index() -> None:
    a, b = bytes(31) + b"\x05", bytes(31) + b"\x03"
    assert distance(a, b) == 6
    assert bucket_index(OWN, bytes(31) + b"\x01") == 0
    assert bucket_index(OWN, b"\x80" + bytes(31)) == 255
    with pytest.raises(LocalProtocolError):
        bucket_index(OWN, OWN)


@pytest.mark.parametrize(
    ("address", "subnet"),
    [
        ("1.2.3.4", "1.2.3.0/24"),
        ("1.2.3.200:9000", "1.2.3.0/24"),
        ("ws://1.2.3.9:443/x", "1.2.3.0/24"),
        ("[2001:db8:1:2::1]:80", "2001:db8:1::/48"),
        ("2001:db8:1:ffff::9", "2001:db8:1::/48"),
        ("::ffff:1.2.3.4", "1.2.3.0/24"),
        ("wss://Relay.Example:443", "name:relay.example"),
        (None, None),
        ("", None),
    ],
)
def test_subnet_of(address: str | None, subnet: str | None) -> None:
    assert subnet_of(address) == subnet


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_subnet_of_never_raises(address: str) -> None:
    assert subnet_of(address) is None or isinstance(subnet_of(address), str)


def test_a_full_bucket_keeps_its_old_live_entries() -> None:
    t = table()
    for n in range(K):
        assert t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), now=float(n))
    newcomer = Contact(id_in_bucket(200, 999), ip(999), 0.0)
    assert not t.seen(newcomer, now=100.0)
    assert newcomer.node_id not in t
    assert [c.node_id for c in t.replacements_of(200)] == [newcomer.node_id]
    assert len(t.bucket(200)) == K
    assert t.next_event() is None  # the oldest was seen 100 s ago: not questionable yet


def test_seen_moves_an_entry_to_the_tail() -> None:
    t = table()
    ids = [id_in_bucket(200, n) for n in range(3)]
    for n, node_id in enumerate(ids):
        t.seen(Contact(node_id, ip(n), 0.0), now=float(n))
    t.seen(Contact(ids[0], ip(0), 0.0), now=10.0)
    assert [c.node_id for c in t.bucket(200)] == [ids[1], ids[2], ids[0]]
    assert t.get(ids[0]) == Contact(ids[0], ip(0), 10.0)


def test_a_stale_oldest_entry_is_pinged_once_and_replaced_when_it_fails() -> None:
    t = table()
    for n in range(K):
        t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), now=0.0)
    newcomer = Contact(id_in_bucket(200, 999), ip(999), 0.0)
    now = 3600.0
    t.seen(newcomer, now)
    event = t.next_event()
    assert isinstance(event, PingContact)
    assert event.contact.node_id == id_in_bucket(200, 0)
    t.seen(Contact(id_in_bucket(200, 998), ip(998), 0.0), now + 1)
    assert t.next_event() is None  # one ping per questionable entry per interval
    t.failed(event.contact.node_id, now + 5)  # a replacement waits: out at once
    assert event.contact.node_id not in t
    assert id_in_bucket(200, 998) in t  # the most recently seen replacement
    assert len(t.bucket(200)) == K


def test_a_live_oldest_entry_keeps_its_slot() -> None:
    t = table()
    for n in range(K):
        t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), now=0.0)
    t.seen(Contact(id_in_bucket(200, 999), ip(999), 0.0), 3600.0)
    event = t.next_event()
    assert isinstance(event, PingContact)
    t.seen(event.contact, 3601.0)  # it answered
    assert event.contact.node_id in t and id_in_bucket(200, 999) not in t
    assert t.bucket(200)[-1].node_id == event.contact.node_id


def test_failures_without_a_replacement_evict_after_max_failures() -> None:
    t = table(max_failures=3)
    victim = id_in_bucket(200, 0)
    t.seen(Contact(victim, ip(0), 0.0), 0.0)
    t.failed(victim, 1.0)
    t.failed(victim, 2.0)
    assert victim in t
    t.seen(Contact(victim, ip(0), 0.0), 3.0)  # an answer resets the count
    t.failed(victim, 4.0)
    t.failed(victim, 5.0)
    assert victim in t
    t.failed(victim, 6.0)
    assert victim not in t and len(t) == 0


def test_replacement_cache_is_bounded_and_keeps_the_most_recent() -> None:
    t = table(replacements=5)
    for n in range(K):
        t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), 0.0)
    for n in range(100, 130):
        t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), float(n))
    cached = [c.node_id for c in t.replacements_of(200)]
    assert cached == [id_in_bucket(200, n) for n in range(125, 130)]


def test_closest_is_sorted_by_xor_distance() -> None:
    rng = DeterministicRng(7, b"closest")
    t = table(subnet_bucket_cap=None, subnet_table_cap=None)
    ids = [rng.bytes(ID_SIZE) for _ in range(500)]
    for n, node_id in enumerate(ids):
        t.seen(Contact(node_id, ip(n), 0.0), 0.0)
    target = rng.bytes(ID_SIZE)
    got = [c.node_id for c in t.closest(target, 20)]
    known = [c.node_id for c in t.contacts()]
    assert got == sorted(known, key=lambda i: distance(i, target))[:20]
    assert len(t) <= t.capacity


def test_own_id_and_malformed_ids() -> None:
    t = table()
    assert not t.seen(Contact(OWN, "1.1.1.1", 0.0), 0.0)
    with pytest.raises(LocalProtocolError):
        t.seen(Contact(b"short", "1.1.1.1", 0.0), 0.0)
    t.failed(b"short", 0.0)  # ignored
    t.remove(OWN)
    with pytest.raises(LocalProtocolError):
        RoutingTable(b"x", DeterministicRng(1), 0.0)


def test_a_flood_from_one_subnet_gets_two_slots_per_bucket_and_a_table_cap() -> None:
    """An attacker in 6.6.6.0/24 with 10,000 ids spread over every bucket."""
    rng = DeterministicRng(3, b"flood")
    t = table()
    for n in range(10_000):
        t.seen(Contact(rng.bytes(ID_SIZE), f"6.6.6.{n % 250}:{n}", 0.0), float(n))
    per_bucket = [len(t.bucket(i)) for i in range(256)]
    assert max(per_bucket) <= 2
    assert len(t) == 10  # the table-wide cap
    assert all(len(t.replacements_of(i)) <= 2 for i in range(256))
    # honest contacts from other subnets still get in: all but the 10 slots taken
    clean = table()
    for n in range(200):
        honest = Contact(rng.bytes(ID_SIZE), ip(n), 0.0)
        t.seen(honest, 20_000.0 + n)
        clean.seen(honest, 20_000.0 + n)
    assert len(t) - 10 >= len(clean) - 10


def test_an_address_change_into_a_full_subnet_keeps_the_old_address() -> None:
    t = table()
    a, b, c = (id_in_bucket(200, n) for n in range(3))
    t.seen(Contact(a, "6.6.6.1", 0.0), 0.0)
    t.seen(Contact(b, "6.6.6.2", 0.0), 0.0)
    t.seen(Contact(c, "7.7.7.7", 0.0), 0.0)
    t.seen(Contact(c, "6.6.6.3", 0.0), 1.0)
    assert t.get(c) == Contact(c, "7.7.7.7", 1.0)
    t.seen(Contact(c, "8.8.8.8", 0.0), 2.0)
    assert t.get(c) == Contact(c, "8.8.8.8", 2.0)


def test_contacts_without_address_are_subnets_of_one() -> None:
    t = table()
    for n in range(K):
        assert t.seen(Contact(id_in_bucket(200, n), None, 0.0), 0.0)
    assert len(t) == K


def test_waived_caps_for_a_private_mesh() -> None:
    t = table(subnet_bucket_cap=None, subnet_table_cap=None)
    for n in range(K):
        assert t.seen(Contact(id_in_bucket(200, n), f"127.0.0.1:{9000 + n}", 0.0), 0.0)


def test_remove_promotes_a_replacement_that_fits_the_caps() -> None:
    t = table()
    for n in range(K):
        t.seen(Contact(id_in_bucket(200, n), ip(n), 0.0), 0.0)
    t.seen(Contact(id_in_bucket(200, 500), ip(500), 0.0), 1.0)
    t.remove(id_in_bucket(200, 3))
    assert id_in_bucket(200, 500) in t and id_in_bucket(200, 3) not in t


def test_refresh_events_for_untouched_buckets() -> None:
    t = table()
    for n in range(5):
        t.seen(Contact(id_in_bucket(250, n), ip(n), 0.0), 0.0)
        t.seen(Contact(id_in_bucket(252, n), ip(n + 10), 0.0), 0.0)
    t.handle_timer(100.0)
    assert t.next_event() is None
    assert t.get_timer() == 160.0
    t.closest(id_in_bucket(252, 77), 3, now=3000.0)  # a lookup into bucket 252
    t.handle_timer(3700.0)
    targets = []
    while (event := t.next_event()) is not None:
        assert isinstance(event, RefreshBucket)
        targets.append(bucket_index(OWN, event.target))
    assert targets == [250, 251, 253, 254, 255]
    t.handle_timer(3800.0)
    assert t.next_event() is None  # each was handed out once


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["seen", "failed", "remove"]),
            st.integers(0, 63),
            st.integers(0, 7),
        ),
        max_size=300,
    )
)
def test_fuzz_invariants_hold_under_any_sequence(ops: list[tuple[str, int, int]]) -> None:
    t = table(k=4, replacements=3, max_failures=2)
    for step, (op, who, net) in enumerate(ops):
        node_id = (who * 0x0101010101).to_bytes(ID_SIZE, "big") if who else b"\xff" * ID_SIZE
        if op == "seen":
            t.seen(Contact(node_id, f"9.9.{net}.1", 0.0), float(step))
        elif op == "failed":
            t.failed(node_id, float(step))
        else:
            t.remove(node_id)
    subnets: dict[str | None, int] = {}
    total = 0
    for index in range(256):
        entries = t.bucket(index)
        total += len(entries)
        assert len(entries) <= 4
        assert len(t.replacements_of(index)) <= 3
        cached = {c.node_id for c in t.replacements_of(index)}
        assert not cached & {c.node_id for c in entries}
        per: dict[str | None, int] = {}
        for c in entries:
            assert bucket_index(OWN, c.node_id) == index
            per[subnet_of(c.address)] = per.get(subnet_of(c.address), 0) + 1
            subnets[subnet_of(c.address)] = subnets.get(subnet_of(c.address), 0) + 1
        assert max(per.values(), default=0) <= 2
    assert max(subnets.values(), default=0) <= 10
    assert total == len(t)


@settings(max_examples=300, deadline=None)
@given(
    own=st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
    ids=st.lists(
        st.tuples(st.integers(0, 24), st.binary(min_size=ID_SIZE, max_size=ID_SIZE)),
        max_size=120,
    ),
    target=st.binary(min_size=ID_SIZE, max_size=ID_SIZE),
    n=st.integers(min_value=0, max_value=60),
    near=st.integers(min_value=0, max_value=ID_SIZE),
)
def test_closest_by_buckets_equals_a_sort_of_the_whole_table(
    own: bytes, ids: list[tuple[int, bytes]], target: bytes, n: int, near: int
) -> None:
    """The per-bucket selection gives exactly the n closest of a full sort, for tables with
    deep buckets (ids sharing up to 24 bits with ours) and targets far from our id, near
    it (sharing ``near`` bytes) and equal to it."""
    t = RoutingTable(own, DeterministicRng(1, b"table"), 0.0, subnet_bucket_cap=None)
    own_int = int.from_bytes(own, "big")
    for i, (shared, noise) in enumerate(ids):
        low = (1 << (ID_SIZE * 8 - shared)) - 1
        node_id = ((own_int & ~low) | (int.from_bytes(noise, "big") & low)).to_bytes(ID_SIZE, "big")
        t.seen(Contact(node_id, ip(i), 1.0), 1.0)
    for goal in (target, own[:near] + target[near:], own):
        brute = sorted(t.contacts(), key=lambda c: distance(c.node_id, goal))[:n]
        assert t.closest(goal, n) == brute


def test_an_entry_seen_without_an_address_keeps_its_subnet_slot() -> None:
    """Seeing a peer before we can describe it (its first request) must not turn its
    entry into a subnet of one: that freed its subnet's slot for one more of a flood."""
    rng = DeterministicRng(5, b"no address")
    t = table()
    flood = [rng.bytes(ID_SIZE) for _ in range(400)]
    for n, node_id in enumerate(flood):
        t.seen(Contact(node_id, f"6.6.6.{n % 250}:{n}", 0.0), 1.0)
    assert len(t) == 10
    for contact in t.contacts():  # each entry asks us something before we can name it
        t.seen(Contact(contact.node_id, None, 0.0), 2.0)
    for n, node_id in reversed(list(enumerate(flood))):  # the rest of the flood tries again
        t.seen(Contact(node_id, f"6.6.6.{n % 250}:{n}", 0.0), 3.0)
    assert len(t) == 10
    assert all(c.address is not None for c in t.contacts())
