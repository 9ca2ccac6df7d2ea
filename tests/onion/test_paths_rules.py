"""Path rules for an open network: subnet_of, one relay per subnet, the guard set's
guards as the only first hops, and rejection sampling that stays exact."""

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.identity import Flags
from zmesh.onion.paths import (
    NO_ADDRESS,
    NoPathError,
    RelayPool,
    choose_leg,
    choose_path,
    subnet_of,
)
from zmesh.rng import DeterministicRng

ME = b"me"


@dataclass(frozen=True)
class R:
    node_id: bytes
    flags: Flags
    addresses: tuple[str, ...]


def relay(name: str, host: str, flags: Flags = Flags.RELAY) -> R:
    return R(name.encode(), flags, (f"http://{host}:9000",))


def ids(path: list[R]) -> tuple[bytes, ...]:
    return tuple(d.node_id for d in path)


@pytest.mark.parametrize(
    ("addresses", "subnet"),
    [
        (("http://203.0.113.5:8080",), "203.0.0.0/16"),
        (("http://203.0.200.1:1", "http://9.9.9.9:1"), "203.0.0.0/16"),  # the first counts
        (("ws://10.0.3.1:9000/path?q",), "10.0.0.0/16"),
        (("http://[2001:db8:1:2::1]:9",), "2001:db8::/32"),
        (("http://[::ffff:10.1.2.3]:1",), "10.1.0.0/16"),  # IPv4-mapped is IPv4
        (("[fe80::1%eth0]:5",), "fe80::/32"),
        (("198.51.100.7:443",), "198.51.0.0/16"),
        (("Relay.Example.ORG.:443",), "host:relay.example.org"),
        (("http://user@relay.example.org/",), "host:relay.example.org"),
        ((), NO_ADDRESS),
        (("http://[bad",), NO_ADDRESS),
        (("",), NO_ADDRESS),
        (("ht tp://1.2.3.4",), NO_ADDRESS),
    ],
)
def test_subnet_of(addresses: tuple[str, ...], subnet: str) -> None:
    assert subnet_of(R(b"x", Flags.RELAY, addresses)) == subnet


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=60), max_size=3))
def test_subnet_of_never_raises(addresses: list[str]) -> None:
    assert isinstance(subnet_of(R(b"x", Flags.RELAY, tuple(addresses))), str)


def test_no_two_relays_of_a_path_share_a_subnet() -> None:
    known = [
        relay("g1", "10.0.0.1"),
        relay("m1", "10.0.0.2"),  # the guard's /16
        relay("m2", "11.0.0.1"),
        relay("e1", "11.0.0.2", Flags.RELAY | Flags.EXIT),  # m2's /16
        relay("e2", "12.0.0.1", Flags.RELAY | Flags.EXIT),
    ]
    rng = DeterministicRng(1)
    seen = set()
    for _ in range(300):
        path = choose_path(rng, known, {b"g1"}, ME, subnet=subnet_of)
        assert len({subnet_of(d) for d in path}) == 3
        seen.add(ids(path))
    assert seen == {(b"g1", b"m2", b"e2"), (b"g1", b"e1", b"e2")} | {(b"g1", b"e2", b"e1")}
    # private (no key): the subnet rule is waived
    waived = {ids(choose_path(rng, known, {b"g1"}, ME)) for _ in range(300)}
    assert (b"g1", b"m1", b"e1") in waived
    loopback = [relay(f"r{i}", "127.0.0.1") for i in range(3)]
    loopback.append(relay("x", "127.0.0.1", Flags.RELAY | Flags.EXIT))
    with pytest.raises(NoPathError):
        choose_path(rng, loopback, {b"r0"}, ME, subnet=subnet_of)
    assert choose_path(rng, loopback, {b"r0"}, ME)[0].node_id == b"r0"


def test_a_guard_set_is_the_only_source_of_first_hops() -> None:
    known = [relay(f"r{i}", f"{10 + i}.0.0.1") for i in range(8)]
    known.append(relay("x", "99.0.0.1", Flags.RELAY | Flags.EXIT))
    linked = {d.node_id for d in known}
    rng = DeterministicRng(2)
    for _ in range(100):
        assert choose_path(rng, known, linked, ME, guards=[b"r3", b"r5"])[0].node_id == b"r3"
    # a suspected (or unlinked) primary: the second guard serves, never another relay
    for _ in range(100):
        path = choose_path(rng, known, linked, ME, {b"r3"}, guards=[b"r3", b"r5"])
        assert path[0].node_id == b"r5"
    path = choose_path(rng, known, linked - {b"r3"}, ME, guards=[b"r3", b"r5"])
    assert path[0].node_id == b"r5"
    with pytest.raises(NoPathError, match="guard set"):
        choose_path(rng, known, linked - {b"r3", b"r5"}, ME, guards=[b"r3", b"r5"])
    with pytest.raises(NoPathError, match="guard set"):
        choose_path(rng, known, linked, ME, guards=[])


def test_a_second_leg_takes_the_second_guard() -> None:
    known = [relay(f"r{i}", f"{10 + i}.0.0.1") for i in range(8)]
    known.append(relay("x", "99.0.0.1", Flags.RELAY | Flags.EXIT))
    linked = {d.node_id for d in known}
    rng = DeterministicRng(3)
    for _ in range(100):
        first = choose_path(rng, known, linked, ME, guards=[b"r1", b"r2"], subnet=subnet_of)
        used = {first[0].node_id, first[1].node_id}
        second = choose_leg(
            rng, known, linked, ME, exit_id=b"x", used=used, guards=[b"r1", b"r2"], subnet=subnet_of
        )
        assert first[0].node_id == b"r1"
        assert second[0].node_id == (b"r2" if b"r2" not in used else b"r1")
        assert second[1].node_id not in used
    with pytest.raises(NoPathError):  # one guard, in the exit's subnet: no leg
        choose_leg(
            rng,
            [*known, relay("y", "99.0.0.2")],
            linked | {b"y"},
            ME,
            exit_id=b"x",
            guards=[b"y"],
            subnet=subnet_of,
        )


def test_a_pool_of_10000_relays_draws_without_filtering() -> None:
    """Rejection sampling: a draw touches a handful of relays, not the directory."""
    known = [
        relay(
            f"r{i}", f"{1 + i // 256 % 200}.{i % 256}.0.1", Flags.RELAY | Flags.EXIT * (i % 5 == 0)
        )
        for i in range(10_000)
    ]
    pool = RelayPool(known, ME, subnet_of)
    checks = 0
    key = pool.key

    class Counting(dict[bytes, str | bytes]):
        def __getitem__(self, k: bytes) -> str | bytes:
            nonlocal checks
            checks += 1
            return key[k]

    pool.key = Counting(key)
    rng = DeterministicRng(4)
    for _ in range(200):
        path = pool.path(rng, None)
        assert len({subnet_of(d) for d in path}) == 3
    assert checks < 200 * 30


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 9), st.sampled_from([1, 3]), st.booleans(), st.integers(0, 3)),
        max_size=9,
    ),
    st.integers(0, 2**32),
)
def test_a_path_is_found_iff_one_exists_under_the_subnet_rule(
    spec: list[tuple[int, int, bool, int]], seed: int
) -> None:
    """Against brute force, with subnets: every path returned is valid, and one is
    returned whenever a valid triple exists."""
    by_id = {b"n%d" % i: R(b"n%d" % i, Flags(f), (f"10.{net}.0.1:1",)) for i, f, _, net in spec}
    known = list(by_id.values())
    linked = {b"n%d" % i for i, _, link, _ in spec if link}
    valid = {
        (g.node_id, m.node_id, e.node_id)
        for g, m, e in itertools.permutations(known, 3)
        if g.node_id in linked
        and e.flags & Flags.EXIT
        and len({subnet_of(g), subnet_of(m), subnet_of(e)}) == 3
    }
    try:
        path = choose_path(DeterministicRng(seed), known, linked, ME, subnet=subnet_of)
    except NoPathError:
        assert not valid
        return
    assert ids(path) in valid


# -- Sybil resistance: draws per subnet, fresh ids weighed down ------------------------


def sybil_world() -> tuple[list[R], set[bytes]]:
    """20 honest relays, each in its own /16, 5 of them exits; 1,000 Sybil exits in 2 /16s."""
    honest = [
        relay(f"h{i}", f"10.{i}.0.1", Flags.RELAY | Flags.EXIT * (i % 4 == 0)) for i in range(20)
    ]
    sybils = [
        relay(f"s{i}", f"203.{i % 2}.7.{i % 250}", Flags.RELAY | Flags.EXIT) for i in range(1000)
    ]
    return honest + sybils, {d.node_id for d in sybils}


def shares(pool: RelayPool[R], sybils: set[bytes], n: int = 3000) -> tuple[float, float]:
    rng = DeterministicRng(11)
    middle = exit_ = 0
    for _ in range(n):
        _, m, e = pool.path(rng, None)
        middle += m.node_id in sybils
        exit_ += e.node_id in sybils
    return middle / n, exit_ / n


def test_one_subnet_s_many_ids_do_not_multiply_its_share() -> None:
    known, sybils = sybil_world()
    middle, exit_ = shares(RelayPool(known, ME, subnet_of), sybils)
    # 2 Sybil subnets of 22 for a middle (about 0.09), of 7 exit subnets (about 0.29)
    assert middle < 0.15 and exit_ < 0.4
    uniform_middle, uniform_exit = shares(RelayPool(known, ME), sybils)  # a private mesh
    assert uniform_middle > 0.9 and uniform_exit > 0.95


def test_fresh_ids_weigh_a_hundredth_of_established_ones() -> None:
    known, sybils = sybil_world()
    day = 86400.0
    first_seen = {d.node_id: (10 * day if d.node_id in sybils else 0.0) for d in known}
    pool = RelayPool(known, ME, subnet_of, first_seen=first_seen, now=10 * day + 60)
    middle, exit_ = shares(pool, sybils)
    # 2 fresh subnets at 1 against 20 (middles) or 5 (exits) established ones at 100
    assert middle < 0.01 and exit_ < 0.02
    # once a day old, they weigh as much as anyone: per subnet again
    later = RelayPool(known, ME, subnet_of, first_seen=first_seen, now=12 * day)
    assert shares(later, sybils)[1] > 0.15
    # a relay the ages do not list is fresh
    unlisted = RelayPool(known, ME, subnet_of, first_seen={}, now=0.0)
    assert set(unlisted.weight.values()) == {1}


def test_weighted_fallbacks_still_find_every_valid_path() -> None:
    """When rejection sampling gives up, the filtered draw keeps the weights: a path is
    still found whenever one exists (one honest exit left among many fresh Sybils)."""
    known, sybils = sybil_world()
    first_seen = {d.node_id: (5.0 if d.node_id in sybils else 0.0) for d in known}
    pool = RelayPool(known, ME, subnet_of, first_seen=first_seen, now=10.0, fresh_age=1.0)
    rng = DeterministicRng(12)
    suspects = {d.node_id for d in known if d.node_id not in sybils and d.node_id != b"h4"}
    for _ in range(50):
        g, m, e = pool.path(rng, None, suspects)
        assert len({subnet_of(g), subnet_of(m), subnet_of(e)}) == 3
