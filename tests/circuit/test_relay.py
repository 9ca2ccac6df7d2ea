"""RelayTable: races that are not attacks, and attacks that must not hurt a relay."""

import pytest
from mesh import build, events_of, full_mesh
from peer import RawPeer, quick_identity

from zmesh import dialer as dialer_module
from zmesh.circuit import builder as builder_module
from zmesh.circuit import relay as relay_module
from zmesh.circuit.relay import CREATE_BURST, CREATE_RATE
from zmesh.errors import CloseCode
from zmesh.identity import Flags, Identity
from zmesh.link import connection as lc
from zmesh.link import frames as lf
from zmesh.node import (
    CircuitBuilt,
    CircuitClosed,
    DialWanted,
    HopOpened,
    LinkClosed,
    Node,
    NodeConfig,
)
from zmesh.onion import sphinx
from zmesh.rng import DeterministicRng
from zmesh.session.frames import PingFrame
from zmesh.sim.faults import Crash
from zmesh.sim.network import Simulator

_PEER = 0x80000000  # a RawPeer dials, so the ids it allocates have the top bit set


def _node(seed: int = 3) -> Node:
    rng = DeterministicRng(seed)
    return Node(Identity.generate(rng), rng, 0.0)


def _header(node: Node, rest: list[sphinx.PathHop], seed: int) -> sphinx.SetupState:
    d = node.descriptor(0.0)
    first = sphinx.PathHop(node.node_id, d.onion_epoch, d.onion_pk)
    return sphinx.build_setup_header(node.geometry, [first, *rest], DeterministicRng(seed))


def _answers(peer: RawPeer) -> list[tuple[str, CloseCode | None]]:
    out: list[tuple[str, CloseCode | None]] = []
    for f in peer.read_all(0.0):
        if isinstance(f, lf.Created):
            out.append(("created", None))
        elif isinstance(f, lf.Destroy):
            out.append(("destroy", f.code))
    return out


def test_create_then_destroy_at_once_does_not_close_the_relay_link() -> None:
    """The relay gets a CREATED for a circuit it already destroyed: dropped, not PROTOCOL
    (before: "unexpected CREATED" closed the link and every circuit on it)."""
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    path = [sim.descriptor(relay), sim.descriptor(dest)]

    def race() -> None:
        cid = source.node.build_circuit(path, sim.now)
        source.node.close_circuit(cid, sim.now)

    sim.call(source, race)
    sim.run(max_time=sim.now + 2)
    assert not events_of(relay, LinkClosed) and not events_of(dest, LinkClosed)
    assert len(relay.node.relay) == len(dest.node.relay) == 0
    assert build(sim, source, [relay, dest]) is not None  # the links still serve


def test_a_late_created_after_the_build_timeout_is_dropped_quietly() -> None:
    sim = full_mesh(3, config=NodeConfig(build_timeout=0.02))  # shorter than the round trip
    source, relay, dest = sim.nodes
    assert build(sim, source, [relay, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code is CloseCode.TIMEOUT
    sim.run(max_time=sim.now + 2)  # the CREATED arrives late, then DESTROY reaches the end
    assert not events_of(source, LinkClosed) and not events_of(relay, LinkClosed)
    assert source.node.link_to(relay.node.node_id) is not None
    assert len(relay.node.relay) == len(dest.node.relay) == 0


def test_frames_for_circuit_ids_that_never_existed_are_protocol_errors() -> None:
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    peer.send(lf.Destroy(_PEER | 5, CloseCode.NONE), 0.0)  # may cross ours: dropped
    assert not peer.closed()
    peer.send(lf.Created(_PEER | 5, bytes(node.geometry.created_size)), 0.0)
    assert peer.closed()


def test_refused_creates_record_no_replay_tag() -> None:
    """A CREATE naming a next hop we cannot reach leaves no tag (before: every such CREATE
    took a slot in the epoch's replay cache, and at 2^20 the relay refused all circuits)."""
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    ghost = _node(9).descriptor(0.0)
    state = _header(node, [sphinx.PathHop(b"\x42" * 32, ghost.onion_epoch, ghost.onion_pk)], 1)
    epoch = node.descriptor(0.0).onion_epoch
    for i in range(3):
        peer.send(lf.Create(_PEER | i, epoch, state.header), 0.0)
    assert _answers(peer) == [("destroy", CloseCode.CONNECTION_FAILED)] * 3
    assert not node.keyring.epoch_key(epoch).replay.seen(state.hop_keys[0].replay_tag)
    final = _header(node, [], 2)  # a circuit we accept records its tag ...
    peer.send(lf.Create(_PEER | 10, epoch, final.header), 0.0)
    peer.send(lf.Create(_PEER | 11, epoch, final.header), 0.0)  # ... so a replay is refused
    assert _answers(peer) == [("created", None), ("destroy", CloseCode.REPLAY)]


def test_garbage_creates_beyond_the_budget_cost_no_decapsulation() -> None:
    node = _node()
    hostile = RawPeer(node, 1, 0.0)
    honest = RawPeer(node, 2, 0.0, seed=4)
    epoch = node.descriptor(0.0).onion_epoch
    junk = DeterministicRng(6).bytes(node.geometry.header_size)
    for i in range(1000):
        hostile.send(lf.Create(_PEER | i, epoch, junk), 0.0)
    codes = [code for _, code in _answers(hostile)]
    assert codes.count(CloseCode.RESOURCE) == 1000 - CREATE_BURST  # refused before decaps
    assert len(codes) == 1000 and not hostile.closed()
    honest.send(lf.Create(_PEER | 1, epoch, _header(node, [], 3).header), 0.0)
    assert _answers(honest) == [("created", None)]  # another peer's budget is its own
    hostile.send(lf.Create(_PEER | 2000, epoch, junk), 1.0 / CREATE_RATE)  # it refills
    assert [c for _, c in _answers(hostile)] == [CloseCode.AUTH]


def test_circuit_slots_are_capped_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lc, "MAX_CIRCUITS_PER_DIRECTION", 2)
    node = _node()
    client = RawPeer(node, 1, 0.0)
    nxt = RawPeer(node, 2, 0.0, seed=5)
    epoch = node.descriptor(0.0).onion_epoch
    onward = _node(9).descriptor(0.0)
    hop = sphinx.PathHop(nxt.node_id, onward.onion_epoch, onward.onion_pk)
    for i in range(3):  # outgoing ids towards `nxt` run out after 2
        client.send(lf.Create(_PEER | i, epoch, _header(node, [hop], 10 + i).header), 0.0)
    assert [c for _, c in _answers(client)] == [CloseCode.RESOURCE]
    assert sum(isinstance(f, lf.Create) for f in nxt.read_all(0.0)) == 2
    client.send(lf.Create(_PEER | 7, epoch, _header(node, [], 20).header), 0.0)
    assert [c for _, c in _answers(client)] == [CloseCode.RESOURCE]  # incoming: 2 live
    assert not client.closed() and not nxt.closed()


def test_idle_circuits_time_out_at_every_hop() -> None:
    sim = full_mesh(3, config=NodeConfig(idle_timeout=30.0))
    source, relay, dest = sim.nodes
    assert build(sim, source, [relay, dest]) is not None
    assert len(relay.node.relay) == len(dest.node.relay) == 1
    sim.run(max_time=sim.now + 30.0 + 61.0)  # the timeout, plus one sweep interval
    assert len(relay.node.relay) == len(dest.node.relay) == 0
    assert events_of(source, CircuitClosed)[-1].code is CloseCode.TIMEOUT
    assert not source.node.builder.built()


def test_relays_keep_no_history_of_circuits() -> None:
    """What a hop learns is an event for the demo and tests (hop_events, off by default);
    nothing stays on the node."""
    sim = full_mesh(3, config=NodeConfig(hop_events=True))
    source, relay, dest = sim.nodes
    for _ in range(20):
        cid = build(sim, source, [relay, dest])
        assert cid is not None
        sim.call(source, lambda c=cid: source.node.close_circuit(c, sim.now))  # type: ignore[misc]
        sim.run(max_time=sim.now + 1)
    assert len(relay.node.relay) == 0 and len(relay.node.relay._hops) == 0
    assert not hasattr(relay.node, "relay_views")
    views = events_of(relay, HopOpened)
    assert len(views) == 20
    assert {(v.predecessor, v.successor) for v in views} == {
        (source.node.node_id, dest.node.node_id)
    }


def test_tearing_down_many_circuits_never_closes_the_link_to_a_third_party(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile predecessor builds circuits towards an honest, slow neighbour, then walks
    away: one DESTROY per circuit waits for credit on the neighbour's link, which stays."""
    monkeypatch.setattr(lc, "LINK_WINDOW", 8)
    monkeypatch.setattr(lc, "MAX_CONTROL_BACKLOG", 4)
    node = _node()
    hostile = RawPeer(node, 1, 0.0)
    slow = RawPeer(node, 2, 0.0, seed=5)  # reads, never returns credit
    epoch = node.descriptor(0.0).onion_epoch
    onward = _node(9).descriptor(0.0)
    hop = sphinx.PathHop(slow.node_id, onward.onion_epoch, onward.onion_pk)
    for i in range(20):
        hostile.send(lf.Create(_PEER | i, epoch, _header(node, [hop], 30 + i).header), 0.0)
    slow.read(0.0)
    assert len(node.relay) == 20
    hostile.send(lf.Close(CloseCode.NONE), 0.0)
    assert hostile.closed() and not slow.closed()
    assert len(node.relay) == 0


def test_one_predecessor_cannot_take_every_circuit_id_towards_a_next_hop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay_module, "MAX_PER_PREDECESSOR", 2)
    node = _node()
    greedy = RawPeer(node, 1, 0.0)
    other = RawPeer(node, 2, 0.0, seed=4)
    nxt = RawPeer(node, 3, 0.0, seed=5)
    epoch = node.descriptor(0.0).onion_epoch
    onward = _node(9).descriptor(0.0)
    hop = sphinx.PathHop(nxt.node_id, onward.onion_epoch, onward.onion_pk)
    for i in range(3):
        greedy.send(lf.Create(_PEER | i, epoch, _header(node, [hop], 50 + i).header), 0.0)
    assert [c for _, c in _answers(greedy)] == [CloseCode.RESOURCE]
    other.send(lf.Create(_PEER | 1, epoch, _header(node, [hop], 60).header), 0.0)
    assert _answers(other) == []  # forwarded: its share is its own
    assert sum(isinstance(f, lf.Create) for f in nxt.read_all(0.0)) == 3


# -- dialling the next hop on demand (D12) -----------------------------------------------
_ONION = _node(200).descriptor(0.0)  # an onion key for the hops after the relay


def _targets(node: Node, count: int, first: int = 0) -> list[Identity]:
    """``count`` identities whose descriptors ``node`` knows, with no link to it."""
    identities = [quick_identity(100 + first + i, b"target") for i in range(count)]
    for ident in identities:
        desc = ident.make_descriptor(
            flags=Flags.RELAY,
            onion_epoch=_ONION.onion_epoch,
            onion_pk=_ONION.onion_pk,
            published=0,
            lifetime=3600,
        )
        node.learn_descriptor(desc, 0.0)
    return identities


def _create_to(node: Node, target: Identity, seed: int, circ_id: int) -> lf.Create:
    hop = sphinx.PathHop(target.node_id, _ONION.onion_epoch, _ONION.onion_pk)
    state = _header(node, [hop], seed)
    return lf.Create(circ_id, node.descriptor(0.0).onion_epoch, state.header)


def _dials(node: Node) -> list[bytes]:
    out = []
    while (event := node.next_event()) is not None:
        if isinstance(event, DialWanted):
            out.append(event.descriptor.node_id)
    return out


def test_a_create_waits_while_the_relay_dials_the_next_hop() -> None:
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    peer.send(_create_to(node, target, 1, _PEER | 1), 0.0)
    assert _answers(peer) == []  # no DESTROY: it waits
    assert _dials(node) == [target.node_id]
    assert len(node.relay) == 0
    hop = RawPeer(node, 2, 1.0, identity=target)  # the dial succeeded: the link is up
    forwarded = [f for f in hop.read_all(1.0) if isinstance(f, lf.Create)]
    assert len(forwarded) == 1 and len(node.relay) == 1
    assert _answers(peer) == []


def test_a_failed_or_slow_dial_refuses_the_waiting_creates() -> None:
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    a, b = _targets(node, 2)
    peer.send(_create_to(node, a, 1, _PEER | 1), 0.0)
    peer.send(_create_to(node, b, 2, _PEER | 2), 0.0)
    assert sorted(_dials(node)) == sorted([a.node_id, b.node_id])
    node.dial_failed(a.node_id, 1.0)
    assert _answers(peer) == [("destroy", CloseCode.CONNECTION_FAILED)]
    assert node.get_timer() <= relay_module.PARK_TIMEOUT
    peer.send(lf.Padding(0), relay_module.PARK_TIMEOUT)  # the predecessor is still there
    node.handle_timer(relay_module.PARK_TIMEOUT)
    assert _answers(peer) == [("destroy", CloseCode.CONNECTION_FAILED)]
    assert not peer.closed()


def test_an_unknown_next_hop_is_refused_at_once() -> None:
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    stranger = quick_identity(7, b"stranger")  # no descriptor: nothing to dial
    peer.send(_create_to(node, stranger, 1, _PEER | 1), 0.0)
    assert _answers(peer) == [("destroy", CloseCode.CONNECTION_FAILED)]
    assert _dials(node) == []


def test_waiting_creates_are_bounded_per_predecessor() -> None:
    """One predecessor floods CREATEs to a node we must dial: MAX_PARKED_PER_LINK wait,
    the rest are refused; a DESTROY frees a place; a CELL on a circuit that never
    existed is a protocol error."""
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    limit = relay_module.MAX_PARKED_PER_LINK
    for i in range(limit + 5):
        peer.send(_create_to(node, target, 10 + i, _PEER | i), 0.0)
    assert _answers(peer) == [("destroy", CloseCode.RESOURCE)] * 5
    assert _dials(node) == [target.node_id]  # one dial for all of them
    peer.send(lf.Destroy(_PEER | 0, CloseCode.REQUESTED), 0.0)  # frees a place
    peer.send(_create_to(node, target, 99, _PEER | 99), 0.0)
    assert _answers(peer) == []
    peer.send(lf.Cell(_PEER | 4000, bytes(node.geometry.cell_size)), 0.0)
    assert peer.closed()
    hop = RawPeer(node, 2, 1.0, identity=target)  # nothing of the closed link goes on
    assert [f for f in hop.read_all(1.0) if isinstance(f, lf.Create)] == []


def test_dials_on_demand_are_bounded() -> None:
    """CREATEs naming many different known nodes make at most MAX_DIALS dials at once."""
    node = _node()
    peers = [RawPeer(node, 1 + p, 0.0, seed=50 + p) for p in range(2)]
    per_peer = dialer_module.MAX_DIALS // 2 + 4
    targets = _targets(node, 2 * per_peer)
    for p, peer in enumerate(peers):
        for i in range(per_peer):
            target = targets[p * per_peer + i]
            peer.send(_create_to(node, target, 300 + p * per_peer + i, _PEER | i), 0.0)
    assert len(_dials(node)) == dialer_module.MAX_DIALS
    refused = [a for peer in peers for a in _answers(peer)]
    assert refused == [("destroy", CloseCode.RESOURCE)] * (2 * per_peer - dialer_module.MAX_DIALS)


def test_a_relay_dials_the_next_hop_in_the_simulator() -> None:
    """b knows c (gossip through a) but has no link to it: the circuit a -> b -> c is built
    through a link b dials on demand; to a crashed node it fails with CONNECTION_FAILED."""
    sim = Simulator(7)
    a, b, c, d = (sim.add_node() for _ in range(4))
    for x, y in ((a, b), (a, c), (a, d)):
        sim.connect(x, y)
    known = (c.node.node_id, d.node.node_id)
    assert sim.run(lambda: all(k in b.node.directory for k in known), max_time=30)
    assert b.node.link_to(c.node.node_id) is None
    start = sim.now
    assert build(sim, a, [b, c]) is not None
    assert b.node.link_to(c.node.node_id) is not None
    took = sim.now - start
    start = sim.now
    assert build(sim, a, [b, c]) is not None  # over the link that now exists
    assert sim.now - start < took
    sim.apply(Crash(d.index))
    assert build(sim, a, [b, d]) is None
    assert events_of(a, CircuitClosed)[-1].code == CloseCode.CONNECTION_FAILED


# -- data behind the CREATE (D49) --------------------------------------------------------
def _cells(node: Node, n: int) -> list[bytes]:
    return [bytes([i + 1]) * node.geometry.cell_size for i in range(n)]


def test_cells_behind_a_waiting_create_follow_it_in_order() -> None:
    """Cells that arrive while the CREATE waits for the dial are kept and go out right
    behind the forwarded CREATE, in order, each with the relay's layer removed."""
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    create = _create_to(node, target, 1, _PEER | 1)
    peer.send(create, 0.0)
    cells = _cells(node, relay_module.MAX_EARLY_CELLS)
    for cell in cells:
        peer.send(lf.Cell(_PEER | 1, cell), 0.0)
    assert _answers(peer) == [] and not peer.closed()
    hop = RawPeer(node, 2, 1.0, identity=target)
    out = [f for f in hop.read_all(1.0) if isinstance(f, lf.Create | lf.Cell)]
    assert isinstance(out[0], lf.Create)
    assert [type(f) for f in out[1:]] == [lf.Cell] * len(cells)
    assert all(f.circ_id == out[0].circ_id for f in out[1:])
    assert all(isinstance(f, lf.Cell) and f.cell != c for f, c in zip(out[1:], cells, strict=True))
    assert len({f.cell for f in out[1:] if isinstance(f, lf.Cell)}) == len(cells)


def test_too_many_cells_behind_a_waiting_create_refuse_it() -> None:
    """One cell over MAX_EARLY_CELLS destroys the circuit (RESOURCE); the cells kept are
    discarded with it, later ones dropped quietly, and nothing goes to the next hop."""
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    peer.send(_create_to(node, target, 1, _PEER | 1), 0.0)
    for cell in _cells(node, relay_module.MAX_EARLY_CELLS + 3):
        peer.send(lf.Cell(_PEER | 1, cell), 0.0)
    assert _answers(peer) == [("destroy", CloseCode.RESOURCE)]
    assert not peer.closed()
    hop = RawPeer(node, 2, 1.0, identity=target)
    assert [f for f in hop.read_all(1.0) if isinstance(f, lf.Create | lf.Cell)] == []


def test_a_failed_dial_discards_the_cells_behind_its_create() -> None:
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    peer.send(_create_to(node, target, 1, _PEER | 1), 0.0)
    for cell in _cells(node, 3):
        peer.send(lf.Cell(_PEER | 1, cell), 0.0)
    node.dial_failed(target.node_id, 1.0)
    assert _answers(peer) == [("destroy", CloseCode.CONNECTION_FAILED)]
    peer.send(lf.Cell(_PEER | 1, _cells(node, 1)[0]), 1.0)  # racing the DESTROY: dropped
    assert not peer.closed()
    hop = RawPeer(node, 2, 2.0, identity=target)
    assert [f for f in hop.read_all(2.0) if isinstance(f, lf.Create | lf.Cell)] == []


def test_cells_behind_an_extended_create_go_on_before_created() -> None:
    """The relay passed the CREATE on; forward cells follow it at once (CREATED has not
    come back); a backward cell before CREATED is a protocol error."""
    node = _node()
    peer = RawPeer(node, 1, 0.0)
    [target] = _targets(node, 1)
    hop = RawPeer(node, 2, 0.0, identity=target)
    peer.send(_create_to(node, target, 1, _PEER | 1), 0.0)
    for cell in _cells(node, 3):
        peer.send(lf.Cell(_PEER | 1, cell), 0.0)
    out = [f for f in hop.read_all(0.0) if isinstance(f, lf.Create | lf.Cell)]
    assert [type(f) for f in out] == [lf.Create, lf.Cell, lf.Cell, lf.Cell]
    hop.send(lf.Cell(out[0].circ_id, _cells(node, 1)[0]), 0.0)
    assert hop.closed()


def test_a_client_sends_cells_right_behind_its_create() -> None:
    """Frames sent on a circuit still being built reach the final hop, in order, after
    the CREATE: before CREATED comes back to the client."""
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    got: list[int] = []
    dest.node.relay.deliver_to(
        lambda cid, frames, now: got.extend(f.nonce for f in frames if isinstance(f, PingFrame))
    )
    path = [sim.descriptor(relay), sim.descriptor(dest)]

    def start(now: float) -> int:
        cid = source.node.build_circuit(path, now)
        for n in (1, 2, 3):
            source.node.builder.send_frames(cid, [PingFrame(n)], now)
        return cid

    mark = source.event_count
    cid = sim.call(source, lambda: start(sim.now))
    assert cid not in source.node.builder.built()
    sim.run(lambda: len(got) == 3, max_time=sim.now + 5)
    assert got == [1, 2, 3]
    assert not any(isinstance(e, CircuitBuilt) for e in source.events_since(mark))
    sim.run(lambda: cid in source.node.builder.built(), max_time=sim.now + 5)


def test_a_client_sends_at_most_max_early_cells_before_created_and_the_rest_after() -> None:
    """A relay keeps only MAX_EARLY_CELLS behind a parked CREATE, so the builder sends no
    more before CREATED: later cells wait in the circuit and follow CREATED, in order."""
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    got: list[int] = []
    dest.node.relay.deliver_to(
        lambda cid, frames, now: got.extend(f.nonce for f in frames if isinstance(f, PingFrame))
    )
    path = [sim.descriptor(relay), sim.descriptor(dest)]
    total = relay_module.MAX_EARLY_CELLS + 3

    def start(now: float) -> int:
        cid = source.node.build_circuit(path, now)
        for n in range(total):
            source.node.builder.send_frames(cid, [PingFrame(n)], now)
        return cid

    cid = sim.call(source, lambda: start(sim.now))
    assert sim.run(lambda: cid in source.node.builder.built(), max_time=sim.now + 5)
    assert len(got) == relay_module.MAX_EARLY_CELLS  # the rest left with CREATED
    assert sim.run(lambda: len(got) == total, max_time=sim.now + 5)
    assert got == list(range(total))
    assert not events_of(source, CircuitClosed)


def test_cells_held_for_created_are_bounded() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    path = [sim.descriptor(relay), sim.descriptor(dest)]

    def start(now: float) -> int:
        cid = source.node.build_circuit(path, now)
        for n in range(relay_module.MAX_EARLY_CELLS + builder_module.MAX_HELD + 1):
            source.node.builder.send_frames(cid, [PingFrame(n)], now)
        return cid

    cid = sim.call(source, lambda: start(sim.now))
    assert cid not in source.node.builder
    sim.run(lambda: bool(events_of(source, CircuitClosed)), max_time=sim.now + 1)
    assert [e.code for e in events_of(source, CircuitClosed)] == [CloseCode.RESOURCE]
