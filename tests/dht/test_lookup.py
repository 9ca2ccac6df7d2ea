"""The iterative lookup: unit behaviour, a simulated network of 2,000 ids, and answers from
adversaries (fake unreachable contacts, never-ending chains of fresh ids)."""

import bisect
import heapq
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from zmesh.dht.lookup import ALPHA, REFERRAL_FAILURES, FindRequest, Lookup, LookupResult
from zmesh.dht.routing import ID_SIZE, Contact, K, distance
from zmesh.errors import LocalProtocolError
from zmesh.rng import DeterministicRng, randbelow

Answer = Callable[[bytes, bytes], list[Contact] | None]  # (responder, target) -> contacts


def c(n: int) -> Contact:
    return Contact(n.to_bytes(ID_SIZE, "big"), f"10.0.{n & 255}.1", 0.0)


@dataclass
class Network:
    """``n`` plain ids with Kademlia tables built directly: for each node, up to ``k`` random
    members of each of its buckets (a bucket is a contiguous range of the sorted ids)."""

    n: int
    seed: int
    k: int = K
    ids: list[bytes] = field(default_factory=list)
    known: dict[bytes, list[bytes]] = field(default_factory=dict)
    dead: set[bytes] = field(default_factory=set)
    hostile: set[bytes] = field(default_factory=set)

    def __post_init__(self) -> None:
        rng = DeterministicRng(self.seed, b"dht-net")
        self.ids = sorted({rng.bytes(ID_SIZE) for _ in range(self.n)})
        ints = [int.from_bytes(i, "big") for i in self.ids]
        for own, x in zip(self.ids, ints, strict=True):
            known: list[bytes] = []
            for index in range(255, -1, -1):
                lo = ((x >> index) ^ 1) << index  # flip bit `index`, clear the bits below
                a, b = bisect.bisect_left(ints, lo), bisect.bisect_left(ints, lo + (1 << index))
                if b - a <= self.k:
                    known += self.ids[a:b]
                else:
                    picks: set[int] = set()
                    while len(picks) < self.k:
                        picks.add(a + randbelow(rng, b - a))
                    known += [self.ids[p] for p in sorted(picks)]
            self.known[own] = known

    def address(self, node_id: bytes) -> str:
        return f"{node_id[0]}.{node_id[1]}.{node_id[2]}.{node_id[3]}"

    def contact(self, node_id: bytes) -> Contact:
        return Contact(node_id, self.address(node_id), 0.0)

    def closest_known(self, node_id: bytes, target: bytes, n: int) -> list[Contact]:
        ranked = sorted(self.known[node_id], key=lambda i: distance(i, target))
        return [self.contact(i) for i in ranked[:n]]

    def true_closest(self, target: bytes, n: int, origin: bytes) -> list[bytes]:
        live = [i for i in self.ids if i not in self.dead and i != origin]
        return sorted(live, key=lambda i: distance(i, target))[:n]

    def honest_answer(self, responder: bytes, target: bytes) -> list[Contact] | None:
        if responder in self.dead or responder not in self.known:
            return None
        return self.closest_known(responder, target, self.k)


def drive(
    lookup: Lookup, answer: Answer, rtt: Callable[[bytes], float], now: float = 0.0
) -> tuple[LookupResult, float, list[FindRequest]]:
    """Run ``lookup`` in virtual time: answers arrive after ``rtt``, silence times out."""
    heap: list[tuple[float, int, bytes, list[Contact]]] = []
    sent: list[FindRequest] = []
    seq = 0
    while not lookup.done:
        while (req := lookup.next_event()) is not None:
            sent.append(req)
            got = answer(req.contact.node_id, lookup.target)
            if got is not None:
                seq += 1
                heapq.heappush(
                    heap, (now + rtt(req.contact.node_id), seq, req.contact.node_id, got)
                )
        if lookup.done:
            break
        timer = lookup.get_timer()
        if heap and heap[0][0] <= timer:
            now, _, who, contacts = heapq.heappop(heap)
            lookup.response(who, contacts, now)
        else:
            assert timer < float("inf"), "a lookup with nothing in flight must be done"
            now = timer
            lookup.handle_timer(now)
    assert lookup.result is not None
    return lookup.result, now, sent


def rtt_of(node_id: bytes) -> float:
    return 0.02 + node_id[5] / 255 * 0.3


# -- units -------------------------------------------------------------------------------


def test_a_lookup_queries_alpha_at_a_time_closest_first() -> None:
    seeds = [c(n) for n in (9, 1, 5, 3, 7)]
    lookup = Lookup(c(0).node_id, seeds, 0.0, alpha=2, k=3)
    first = [lookup.next_event(), lookup.next_event(), lookup.next_event()]
    assert [r.contact.node_id for r in first[:2] if r] == [c(1).node_id, c(3).node_id]
    assert first[2] is None
    assert lookup.get_timer() == 5.0
    assert lookup.response(c(1).node_id, [], 0.1)
    req = lookup.next_event()
    assert req is not None and req.contact.node_id == c(5).node_id
    assert lookup.response(c(3).node_id, [], 0.2)
    assert lookup.response(c(5).node_id, [], 0.3)
    assert lookup.done  # the three closest answered; 7 and 9 are never asked
    assert lookup.result is not None
    assert [x.node_id for x in lookup.result.closest] == [c(n).node_id for n in (1, 3, 5)]
    assert lookup.result.rpcs == 3 and lookup.result.rounds == 1
    assert lookup.result.closest[0].seen == 0.1


def test_timeouts_drop_a_contact_and_the_next_is_asked() -> None:
    lookup = Lookup(c(0).node_id, [c(1), c(2), c(3)], 0.0, alpha=1, k=2, rpc_timeout=2.0)
    assert lookup.next_event() == FindRequest(c(1), 0)
    lookup.handle_timer(1.0)
    assert lookup.next_event() is None
    lookup.handle_timer(2.0)
    assert lookup.next_event() == FindRequest(c(2), 0)
    assert not lookup.response(c(1).node_id, [c(4)], 2.5)  # late: ignored
    lookup.timeout(c(2).node_id, 3.0)  # the driver could not reach it
    assert lookup.next_event() == FindRequest(c(3), 0)
    lookup.response(c(3).node_id, [], 3.1)
    assert lookup.result is not None
    assert [x.node_id for x in lookup.result.closest] == [c(3).node_id]
    assert lookup.result.failures == 2


def test_unsolicited_duplicate_and_malformed_answers_are_ignored() -> None:
    lookup = Lookup(c(0).node_id, [c(8)], 0.0, alpha=1, k=4, own_id=c(2).node_id)
    assert not lookup.response(c(9).node_id, [c(1)], 0.1)
    junk = [Contact(b"short", None, 0.0), c(2), c(4), c(4)]
    assert lookup.response(c(8).node_id, junk, 0.1)
    assert not lookup.response(c(8).node_id, [c(1)], 0.2)
    req = lookup.next_event()
    assert req is not None and req.contact.node_id == c(8).node_id
    req = lookup.next_event()
    assert req is not None and req.contact.node_id == c(4).node_id  # not our own id 2
    assert lookup.next_event() is None


def test_answers_read_at_most_k_contacts_and_the_shortlist_is_bounded() -> None:
    lookup = Lookup(c(0).node_id, [c(1000)], 0.0, alpha=1, k=4, max_shortlist=6)
    lookup.next_event()
    lookup.response(c(1000).node_id, [c(n) for n in range(10, 30)], 0.1)
    asked = []
    while (req := lookup.next_event()) is not None:
        asked.append(req.contact.node_id)
    assert asked == [c(10).node_id]  # 10..13 read, the rest ignored; alpha = 1
    lookup.response(c(10).node_id, [c(n) for n in range(500, 504)], 0.2)
    lookup.response(c(11).node_id, [], 0.3)
    assert len(lookup._paths[0].shortlist) <= 6


def test_disjoint_paths_never_share_a_node() -> None:
    seeds = [c(n) for n in range(1, 9)]
    lookup = Lookup(c(0).node_id, seeds, 0.0, alpha=1, k=3, disjoint_paths=2)
    a, b = lookup.next_event(), lookup.next_event()
    assert a is not None and b is not None
    assert (a.path, b.path) == (0, 1)
    assert (a.contact, b.contact) == (c(1), c(2))  # seeds dealt round-robin, closest first
    # path 0's answer names 2 (claimed by path 1) and 3 (path 1's seed, not yet asked)
    lookup.response(c(1).node_id, [c(2), c(3), c(50)], 0.1)
    third = lookup.next_event()
    assert third == FindRequest(c(3), 0)  # the first to ask claims it
    lookup.response(c(2).node_id, [c(3), c(1)], 0.2)
    fourth = lookup.next_event()
    assert fourth is not None and fourth.path == 1 and fourth.contact not in (c(1), c(3))
    queried: dict[bytes, int] = {}
    result, _, sent = drive(
        lookup, lambda who, _t: [c(n) for n in range(40, 44)], lambda _: 0.01, now=0.3
    )
    for req in [a, b, third, fourth, *sent]:
        assert queried.setdefault(req.contact.node_id, req.path) == req.path
    assert len(queried) == result.rpcs


def test_cancel_and_parameters() -> None:
    lookup = Lookup(c(0).node_id, [c(1)], 0.0)
    lookup.cancel(0.0)
    assert lookup.result is not None and not lookup.result.exhausted
    assert Lookup(c(0).node_id, [], 0.0).done
    with pytest.raises(LocalProtocolError):
        Lookup(b"x", [], 0.0)
    with pytest.raises(LocalProtocolError):
        Lookup(c(0).node_id, [], 0.0, alpha=0)


def test_a_lookup_for_a_node_finds_it() -> None:
    net = Network(300, seed=4)
    target = net.ids[123]
    origin = net.ids[7]
    lookup = Lookup(target, net.closest_known(origin, target, K), 0.0, own_id=origin)
    result, _, _ = drive(lookup, net.honest_answer, rtt_of)
    assert result.closest[0].node_id == target


# -- the 2,000-node network --------------------------------------------------------------


def run_lookups(
    net: Network, count: int, seed: int, answer: Answer, **kw: int
) -> list[tuple[LookupResult, float, list[bytes]]]:
    """``count`` lookups from random live nodes for random targets: each result, its
    virtual duration and the true k closest live ids (the origin aside)."""
    rng = DeterministicRng(seed, b"lookups")
    out = []
    for _ in range(count):
        origin = net.ids[randbelow(rng, len(net.ids))]
        while origin in net.dead or origin in net.hostile:
            origin = net.ids[randbelow(rng, len(net.ids))]
        target = rng.bytes(ID_SIZE)
        d = kw.get("disjoint_paths", 1)
        seeds = [s for s in net.closest_known(origin, target, K * d) if s.node_id != origin]
        lookup = Lookup(target, seeds, 0.0, own_id=origin, **kw)
        result, elapsed, _ = drive(lookup, answer, rtt_of)
        out.append((result, elapsed, net.true_closest(target, K, origin)))
    return out


def ids(result: LookupResult) -> list[bytes]:
    return [x.node_id for x in result.closest]


def p99(values: list[int]) -> float:
    return statistics.quantiles(values, n=100)[98]


@pytest.fixture(scope="module")
def net2000() -> Network:
    return Network(2000, seed=1)


@pytest.mark.parametrize("paths", [1, 4])
def test_2000_nodes_lookups_find_the_true_k_closest(net2000: Network, paths: int) -> None:
    runs = run_lookups(net2000, 100, seed=paths, answer=net2000.honest_answer, disjoint_paths=paths)
    rounds = [r.rounds for r, _, _ in runs]
    rpcs = [r.rpcs for r, _, _ in runs]
    print(
        f"\n2000 nodes, d={paths}: rounds median {statistics.median(rounds)} p99 {p99(rounds)}; "
        f"rpcs median {statistics.median(rpcs)} p99 {p99(rpcs)}; "
        f"latency median {statistics.median(t for _, t, _ in runs):.2f} s"
    )
    assert all(ids(r) == want for r, _, want in runs)
    assert statistics.median(rounds) <= 5
    assert not any(r.exhausted for r, _, _ in runs)


def test_2000_nodes_with_a_tenth_dead(net2000: Network) -> None:
    rng = DeterministicRng(11, b"dead")
    net2000.dead = {i for i in net2000.ids if randbelow(rng, 10) == 0}
    try:
        runs = run_lookups(net2000, 60, seed=3, answer=net2000.honest_answer)
    finally:
        net2000.dead = set()
    # Answers name dead contacts too, so the 20th live node may go unnamed: the closest is
    # always found, and nearly all of the k closest.
    assert sum(ids(r) == want for r, _, want in runs) >= 0.6 * len(runs)
    assert all(ids(r)[0] == want[0] for r, _, want in runs)
    assert statistics.mean(len(set(ids(r)) & set(want)) / K for r, _, want in runs) >= 0.95
    assert statistics.median(r.rounds for r, _, _ in runs) <= 5


def fakes_for(target: bytes, salt: bytes, n: int) -> list[Contact]:
    """``n`` unreachable ids closer to ``target`` than any honest node (they share its
    first 64 bits)."""
    rng = DeterministicRng(salt, b"fakes")
    return [Contact(target[:8] + rng.bytes(ID_SIZE - 8), f"6.6.{i}.6", 0.0) for i in range(n)]


@pytest.mark.parametrize(("paths", "min_success"), [(1, 0.95), (4, 0.95)])
def test_2000_nodes_with_a_tenth_answering_fake_contacts(
    net2000: Network, paths: int, min_success: float
) -> None:
    """10% of nodes answer every FIND with k unreachable ids closer than anyone: the
    lookups end within their RPC bound, and disjoint paths keep them succeeding."""
    rng = DeterministicRng(12, b"hostile")
    net2000.hostile = {i for i in net2000.ids if randbelow(rng, 10) == 0}

    def answer(responder: bytes, target: bytes) -> list[Contact] | None:
        if responder in net2000.hostile:
            return fakes_for(target, responder, K)
        return net2000.honest_answer(responder, target)

    try:
        runs = run_lookups(net2000, 60, seed=5, answer=answer, disjoint_paths=paths)
    finally:
        net2000.hostile = set()
    success = sum(ids(r) == want for r, _, want in runs) / len(runs)
    print(
        f"\nfakes from 10%, d={paths}: success {success:.2f}, rpcs median "
        f"{statistics.median(r.rpcs for r, _, _ in runs)}, latency median "
        f"{statistics.median(t for _, t, _ in runs):.1f} s"
    )
    assert all(r.rpcs <= 4 * K * paths for r, _, _ in runs)
    assert success >= min_success


@pytest.mark.parametrize("max_rpcs", [80, 40])
def test_answers_that_are_all_fake_end_within_the_bounds(max_rpcs: int) -> None:
    """Every seed answers with 40 unreachable ids closer to the target than itself."""
    seeds = [Contact(b"\xf0" + bytes(30) + bytes([n]), None, 0.0) for n in range(K)]
    seed_ids = {s.node_id for s in seeds}
    target = bytes(ID_SIZE)
    lookup = Lookup(target, seeds, 0.0, rpc_timeout=5.0, max_rpcs=max_rpcs)
    result, elapsed, sent = drive(
        lookup, lambda who, t: fakes_for(t, who, 40) if who in seed_ids else None, lambda _: 0.05
    )
    assert result.rpcs == len(sent) <= max_rpcs
    # a liar costs REFERRAL_FAILURES requests (plus what was in flight at the third
    # failure) before the rest of its fakes are dropped
    assert result.failures <= K * (REFERRAL_FAILURES + ALPHA - 1)
    assert elapsed <= max_rpcs / ALPHA * 5.0 + 5.0
    assert set(ids(result)) <= seed_ids
    assert result.exhausted or ids(result) == sorted(seed_ids)


def test_a_never_ending_chain_of_fresh_answering_ids_is_cut_off() -> None:
    """Every contact answers, each with k fresh ids closer to the target than itself."""
    target = bytes(ID_SIZE)
    counter = iter(range(10**9))

    def answer(who: bytes, t: bytes) -> list[Contact]:
        closer = int.from_bytes(who, "big") >> 1
        return [
            Contact((closer - next(counter) % 1000).to_bytes(ID_SIZE, "big"), None, 0.0)
            for _ in range(K)
        ]

    lookup = Lookup(target, [Contact(b"\xff" * ID_SIZE, None, 0.0)], 0.0, max_rpcs=200)
    result, _, sent = drive(lookup, answer, lambda _: 0.01)
    assert result.exhausted and result.rpcs == 200 == len(sent)
    assert len(lookup._candidates) <= 4 * 5 * K + 200
