"""Peer sampling through the DHT (zmesh/dht/sample.py): min-wise slots, subnet caps and
expiry on their own, then real nodes on the simulator: every node's sample fills, paths
are built from it (next hops resolved through the DHT), and a Sybil subnet holds no more
than its cap."""

import hashlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pytest

from zmesh.dht.sample import PeerSample, SampleConfig
from zmesh.dht.service import LookupDone
from zmesh.dialer import DialWanted
from zmesh.identity import Flags, Identity
from zmesh.node import Node, NodeConfig
from zmesh.onion.paths import RelayPool, subnet_of
from zmesh.rng import DeterministicRng, randbelow
from zmesh.sim import SimNode, Simulator
from zmesh.sim.dht import FastCryptoRng
from zmesh.sim.transport import LinkModel


# -- the sample alone, on a stand-in DHT --------------------------------------------------
@dataclass(frozen=True)
class D:
    node_id: bytes
    flags: Flags
    addresses: tuple[str, ...]
    published: int = 0
    expires: int = 10**9


@dataclass
class FakeDht:
    node_id: bytes = b"\0" * 32
    records: dict[bytes, Any] = field(default_factory=dict)
    table: list[int] = field(default_factory=list)

    def node_record(self, node_id: bytes) -> Any:
        return self.records.get(node_id)

    def lookup_node(self, target: bytes, now: float) -> int:
        return 1

    def find_node_record(self, node_id: bytes, now: float) -> int:
        return 2


def rid(n: object) -> bytes:
    return hashlib.sha256(repr(n).encode()).digest()


def relay(n: object, host: str) -> D:
    return D(rid(n), Flags.RELAY, (f"http://{host}:1",))


def sample(config: SampleConfig | None = None, linked: set[bytes] | None = None) -> PeerSample:
    return PeerSample(
        FakeDht(),  # type: ignore[arg-type]
        DeterministicRng(1),
        0.0,
        linked=lambda i: i in (linked or set()),
        subnet=subnet_of,
        config=config or SampleConfig(size=16, per_subnet=2, ttl=100.0),
    )


def test_slots_fill_and_order_does_not_matter() -> None:
    honest = [relay(i, f"10.{i}.0.1") for i in range(200)]
    a, b = sample(), sample()
    for d in honest:
        a.offer(d, 0.0)  # type: ignore[arg-type]
    for d in reversed(honest):
        for _ in range(3):  # offered again and again: frequency buys nothing
            b.offer(d, 0.0)  # type: ignore[arg-type]
    assert a.full() and 0 < len(a) <= 16
    assert list(a) == list(b)  # min-wise: the set offered decides, not order or repeats


def test_a_flood_from_one_subnet_holds_at_most_its_cap() -> None:
    s = sample()
    flood = [relay(f"s{i}", f"66.66.{i % 250}.{i // 250}") for i in range(5000)]
    honest = [relay(i, f"10.{i}.0.1") for i in range(60)]
    for d in flood + honest + flood:
        s.offer(d, 0.0)  # type: ignore[arg-type]
    assert s.subnets()["66.66.0.0/16"] <= 2
    assert sum(1 for i in s if i in {d.node_id for d in flood}) <= 2
    assert max(s.subnets().values()) <= 2


def test_clients_and_ourselves_are_not_sampled() -> None:
    s = sample()
    s.offer(D(rid("client"), Flags.NONE, ("http://10.0.0.1:1",)), 0.0)  # type: ignore[arg-type]
    s.offer(D(b"\0" * 32, Flags.RELAY, ("http://10.0.0.2:1",)), 0.0)  # type: ignore[arg-type]
    s.offer(D(rid("old"), Flags.RELAY, ("http://10.0.0.3:1",), 0, 5), 10.0)  # type: ignore[arg-type]
    assert len(s) == 0


def test_entries_not_confirmed_expire_and_linked_ones_stay() -> None:
    honest = [relay(i, f"10.{i}.0.1") for i in range(40)]
    linked: set[bytes] = set()
    s = sample(linked=linked)
    for d in honest:
        s.offer(d, 0.0)  # type: ignore[arg-type]
    keep = next(iter(s))
    linked.add(keep)
    s.handle_timer(60.0)  # past ttl/2: checks start, nothing expires yet
    assert len(s) > 1
    s.handle_timer(120.0)  # past ttl: only the linked entry is left
    assert list(s) == [keep]
    assert not s.full()
    for d in honest:  # the emptied slots take the next ids offered
        s.offer(d, 130.0)  # type: ignore[arg-type]
    assert s.full()


def test_a_bad_config_is_refused() -> None:
    from zmesh.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        sample(SampleConfig(size=0))


# -- real nodes on the simulator -----------------------------------------------------------
HONEST = 120
SYBILS = 60


def address(i: int) -> str:
    """Honest node ``i`` in a /16 of its own; Sybils (i >= HONEST) all in 66.66/16."""
    if i >= HONEST:
        j = i - HONEST
        return f"http://66.66.{j // 250}.{j % 250 + 1}:8080"
    return f"http://{11 + i // 200}.{i % 200}.0.1:8080"


def config(i: int) -> NodeConfig:
    flags = Flags.RELAY | (Flags.EXIT if i % 4 == 0 else Flags.NONE)
    return NodeConfig(
        dht=True,
        gossip=False,
        keepalive=60.0,
        link_timeout=180.0,
        private=False,
        guards=True,
        flags=flags,
        addresses=(address(i),),
    )


@pytest.fixture(scope="module")
def network() -> Simulator:
    """HONEST honest nodes and SYBILS Sybils from one /16, joined one at a time (each to
    two earlier nodes), then left to walk for ten simulated minutes."""
    sim = Simulator(11, LinkModel(latency=0.025))
    sim.rng = FastCryptoRng(11, b"simulator")
    booted: set[int] = set()

    def on_event(sn: SimNode, event: object) -> None:
        if isinstance(event, LookupDone) and event.kind.value == "bootstrap":
            booted.add(sn.index)

    sim.on_event = on_event
    order = list(range(HONEST + SYBILS))
    for n in range(len(order)):
        sn = sim.add_node(config(order[n]))
        for j in sorted({randbelow(sim.rng, n) for _ in range(2)} if n else set()):
            sim.connect(sn, sim.nodes[j])
        if n:
            sim.run(partial(booted.__contains__, n), max_time=sim.now + 30.0)
    sim.on_event = None
    sim.run(max_time=sim.now + 600.0)
    return sim


@pytest.mark.slow
def test_every_sample_fills_and_a_sybil_subnet_stays_under_its_cap(network: Simulator) -> None:
    sybil_ids = {sn.node.node_id for sn in network.nodes[HONEST:]}
    shares = []
    for sn in network.nodes[:HONEST]:
        s = sn.node.sample
        assert s is not None
        assert len(s) >= s.config.size // 2, (sn.index, len(s))
        assert max(s.subnets().values()) <= s.config.per_subnet
        shares.append(sum(1 for i in s if i in sybil_ids) / len(s))
    # a third of the ids are Sybils; the cap leaves them at most 2 of >= 32 entries
    assert max(shares) <= 2 / 32
    assert sum(shares) / len(shares) < SYBILS / (HONEST + SYBILS) / 4


@pytest.mark.slow
def test_paths_are_built_from_the_sample(network: Simulator) -> None:
    sim = network
    built = 0
    clients = sim.nodes[1:HONEST:12]
    for sn in clients:
        s = sn.node.sample
        assert s is not None
        pool = RelayPool(s.values(), sn.node.node_id, subnet_of)
        assert pool.exits and len(pool) >= 3
        sessions = sn.node.sessions

        def ready(sn: SimNode = sn) -> bool:
            return sim.call(sn, partial(sn.node.sessions.can_connect, sim.now))

        if not sim.run(ready, max_time=sim.now + 60.0):
            continue
        sid = sim.call(sn, partial(sessions.connect, sim.now, 1))

        def one_leg(sn: SimNode = sn, sid: int = sid) -> bool:
            return len(sn.node.sessions.legs_of(sid)) == 1

        if sim.run(one_leg, max_time=sim.now + 60.0):
            built += 1
            [cid] = sessions.legs_of(sid)
            path = sn.node.builder.path(cid)
            assert all(hop in s for hop in path)  # every hop from the sample
            guards = sn.node.guards
            assert guards is not None and path[0] in guards.first_hops(sim.now)
    assert built >= len(clients) - 1, (built, len(clients))


def test_a_node_being_bootstrapped_is_not_dialled_twice() -> None:
    """A node the driver is already dialling (a bootstrap) is not dialled a second time
    when its descriptor is learned."""
    rng = DeterministicRng(b"boot")
    nodes = [Node(Identity.generate(rng), rng, 0.0, config(i)) for i in range(2)]
    me, relay_node = sorted(nodes, key=lambda n: n.node_id)  # the lower id would dial
    desc = relay_node.descriptor(0.0)
    me.dialing(desc.node_id, 0.0)
    me.learn_descriptor(desc, 0.0)
    events = iter(me.next_event, None)
    assert not any(isinstance(e, DialWanted) for e in events)


def test_a_few_ids_in_every_slot_do_not_make_it_full() -> None:
    """A node's first links may be offered before any walk: two ids then hold all 16 slots,
    and the sample keeps walking at the fill interval until it holds a quarter of them."""
    s = sample()
    for i in range(2):
        s.offer(relay(i, f"10.{i}.0.1"), 0.0)  # type: ignore[arg-type]
    assert len(s) == 2 and not s.full()
    s.handle_timer(0.0)
    assert s.get_timer() == SampleConfig().fill_interval
    for i in range(2, 40):
        s.offer(relay(i, f"10.{i}.0.1"), 1.0)  # type: ignore[arg-type]
    assert s.full()
    s.handle_timer(5.0)
    assert s.get_timer() == 5.0 + SampleConfig().walk_interval
