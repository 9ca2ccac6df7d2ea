"""The simulator's fault model: crash, blackhole, partition, churn, per-link models, and
bounded logs, on real nodes in virtual time."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mesh import accept_streams, build, events_of, finished, full_mesh, open_stream, received

from zmesh.circuit.sessions import SessionClosed, SessionLegLost
from zmesh.errors import CloseCode, LocalProtocolError
from zmesh.link import frames as lf
from zmesh.node import CircuitClosed, Event, LinkClosed, LinkUp
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.rng import DeterministicRng
from zmesh.session.multipath import SERVER_GRACE
from zmesh.sim import (
    DEFAULT_EVENT_LOG,
    Blackhole,
    Crash,
    Heal,
    Join,
    Leave,
    LinkChange,
    LinkModel,
    MemoryTransport,
    Partition,
    SimNode,
    Simulator,
    TamperLink,
    churn,
)
from zmesh.sim.transport import MAX_HELD


def start_transfer(sim: Simulator, source: SimNode, cid: int, size: int) -> bytes:
    """Send ``size`` bytes and FIN on a new session over ``cid`` (its final hop must
    accept streams: :func:`mesh.accept_streams`)."""
    data = DeterministicRng(size).bytes(size)
    session, sid = open_stream(sim, source, [cid], "sink")
    sim.call(source, lambda: source.node.sessions.send(session, sid, data, sim.now))
    sim.call(source, lambda: source.node.sessions.finish(session, sid, sim.now))
    return data


def peer_of(sn: SimNode, other: SimNode) -> bool:
    return sn.node.link_to(other.node.node_id) is not None


# -- crash and blackhole ----------------------------------------------------------------
def test_a_crash_mid_transfer_tears_the_circuit_down_within_link_timeout() -> None:
    sim = full_mesh(5)
    source, r1, r2, dest, spare = sim.nodes
    cid = build(sim, source, [r1, r2, dest])
    assert cid is not None
    accept_streams(sim, dest)
    start_transfer(sim, source, cid, 2_000_000)
    assert sim.run(lambda: len(received(dest)) > 200_000, max_time=sim.now + 30)
    crashed_at = sim.now
    sim.apply(Crash(r2.index))
    timeout = source.node.config.link_timeout
    assert sim.run(
        lambda: bool(events_of(source, CircuitClosed) and events_of(dest, CircuitClosed)),
        max_time=crashed_at + timeout,
    )
    assert sim.now - crashed_at < 2 * sim.model.latency + 0.1  # a crash closes: seen at once
    assert not finished(dest)
    for n in (source, r1, dest):
        assert not len(n.node.relay) and not n.node.builder.built(), n.index
        assert not peer_of(n, r2)
        assert [e.code for e in events_of(n, LinkClosed)] == [CloseCode.CONNECTION_FAILED]
    assert not r2.alive and not r2.transports
    with pytest.raises(LocalProtocolError):
        sim.call(r2, r2.node.peers)
    # the stream outlives its circuit for the session's grace time, then both ends end it
    assert sim.run(
        lambda: bool(events_of(source, SessionClosed) and events_of(dest, SessionClosed)),
        max_time=crashed_at + SERVER_GRACE + 1,
    )
    assert sim.now - crashed_at >= SERVER_GRACE  # the server's, the longer
    assert not finished(dest) and len(source.node.sessions) == len(dest.node.sessions) == 0
    # the survivors carry on: a circuit around the dead relay works
    cid2 = build(sim, source, [r1, spare, dest])
    assert cid2 is not None


def test_a_blackholed_middle_relay_is_detected_by_the_phi_rule() -> None:
    """Its neighbours' link phi reaches 8 about 3 keepalives after its last PONG (D42):
    2 to 3 s after it went silent, long before the 10 s hard cap."""
    sim = full_mesh(4)
    source, r1, r2, dest = sim.nodes
    cid = build(sim, source, [r1, r2, dest])
    assert cid is not None
    config = r1.node.config
    silent_at = sim.now
    sim.apply(Blackhole(r2.index))
    sim.run(max_time=silent_at + 2 * config.keepalive)
    assert cid in source.node.builder.built()  # silence is not a close: nobody knows yet
    assert not any(events_of(n, LinkClosed) for n in (source, r1, dest))
    assert sim.run(
        lambda: cid not in source.node.builder.built(),
        max_time=silent_at + 3.5 * config.keepalive,
    )
    assert sim.now - silent_at < config.link_timeout / 2
    sim.run(max_time=sim.now + 1)
    for n in (source, r1, dest):
        closed = events_of(n, LinkClosed)
        assert [(e.peer_id, e.code) for e in closed] == [(r2.node.node_id, CloseCode.TIMEOUT)]
        assert not len(n.node.relay) and not n.node.builder.built()
    assert len(r2.node.peers()) == 3  # frozen: it never learnt anything
    assert not sim.held


# -- partitions ------------------------------------------------------------------------
def _cut_mid_transfer(
    seconds: float,
) -> tuple[Simulator, SimNode, SimNode, SimNode, int, bytes]:
    """A 1 MB transfer over source -> r1 -> r2 -> dest, and a partition between r1 and
    r2 once 100 kB arrived, healed ``seconds`` later: (sim, source, r2, dest, cid, data)."""
    sim = full_mesh(4)
    source, r1, r2, dest = sim.nodes
    cid = build(sim, source, [r1, r2, dest])
    assert cid is not None
    accept_streams(sim, dest)
    data = start_transfer(sim, source, cid, 1_000_000)
    assert sim.run(lambda: len(received(dest)) > 100_000, max_time=sim.now + 30)
    cut = Partition.between([r1.index], [r2.index])
    sim.apply(cut)
    sim.at(sim.now + seconds, Heal(cut))
    return sim, source, r2, dest, cid, data


def test_a_short_partition_delays_a_transfer_and_loses_nothing() -> None:
    """Shorter than the leg's RTO (200 ms at the least): the session waits, the leg
    carries on."""
    sim, source, _, dest, _, data = _cut_mid_transfer(0.1)
    sim.run(max_time=sim.now + 0.09)
    stalled = len(received(dest))
    assert sim.held and stalled < len(data)
    assert sim.run(lambda: finished(dest), max_time=sim.now + 30)
    assert received(dest) == data
    assert not any(events_of(n, LinkClosed) for n in sim.nodes)
    assert not events_of(source, SessionLegLost)
    assert not sim.held


def test_a_partition_past_the_legs_rto_keeps_the_only_leg_until_a_new_one_is_added() -> None:
    """A 1 s partition: the links survive (shorter than link_timeout) and the session's
    only leg stalls.  It is kept (nothing could take its data over); a leg added during
    the cut takes over, the stalled one is given up, and every byte arrives."""
    sim, source, r2, dest, cid, data = _cut_mid_transfer(1.0)
    sim.run(max_time=sim.now + 0.6)  # well past the leg's RTO
    assert not events_of(source, SessionLegLost) and cid in source.node.builder.built()
    replacement = build(sim, source, [r2, dest])  # around the cut, to the same final hop
    assert replacement is not None
    sessions = source.node.sessions
    session = sessions.session_of(cid)
    assert session is not None
    sim.call(source, lambda: sessions.add_leg(session, replacement, sim.now))
    assert sim.run(lambda: finished(dest), max_time=sim.now + 30)
    assert received(dest) == data
    (lost,) = events_of(source, SessionLegLost)
    assert (lost.circuit_id, lost.reason) == (cid, "stalled")
    assert not events_of(source, SessionClosed)
    assert not any(events_of(n, LinkClosed) for n in sim.nodes)


def test_a_partition_shorter_than_the_grace_time_only_delays_a_single_leg() -> None:
    sim, source, _, dest, _, data = _cut_mid_transfer(1.0)
    assert sim.run(lambda: finished(dest), max_time=sim.now + 30)
    assert received(dest) == data
    assert not events_of(source, SessionLegLost) and not events_of(source, CircuitClosed)


def test_a_partition_heals_and_new_circuits_work() -> None:
    sim = full_mesh(6)
    left, right = sim.nodes[:3], sim.nodes[3:]
    a, b, c = left
    x, y, _ = right
    crossing = build(sim, a, [b, x, y])
    assert crossing is not None
    cut = Partition.between([n.index for n in left], [n.index for n in right])
    timeout = a.node.config.link_timeout
    sim.at(sim.now + 1, cut)
    sim.at(sim.now + 1 + 3 * timeout, Heal(cut))
    sim.run(max_time=sim.now + 1 + 2 * timeout)
    assert crossing not in a.node.builder.built()
    for n in sim.nodes:  # every link across timed out, on both sides
        side = left if n in left else right
        assert sorted(n.node.peers()) == sorted(m.node.node_id for m in side if m is not n)
    assert build(sim, a, [b, c]) is not None  # each side still works on its own
    assert not sim.held  # both ends closed: nothing waits for the heal
    sim.run(max_time=sim.now + 2 * timeout)  # healed
    for m in left:
        for n in right:
            sim.connect(m, n)
    assert sim.run(lambda: all(len(n.node.peers()) == 5 for n in sim.nodes), max_time=sim.now + 5)
    cid = build(sim, a, [b, x, y])
    assert cid is not None
    accept_streams(sim, y)
    data = start_transfer(sim, a, cid, 100_000)
    assert sim.run(lambda: finished(y), max_time=sim.now + 30)
    assert received(y) == data


def test_a_link_opened_across_a_partition_does_not_come_up() -> None:
    sim = Simulator(3)
    a, b = sim.add_node(), sim.add_node()
    sim.apply(Partition.between([a.index], [b.index]))
    sim.connect(a, b)
    sim.run(max_time=60)
    assert not a.node.peers() and not b.node.peers()
    assert events_of(a, LinkClosed)[0].code == CloseCode.TIMEOUT
    assert not a.transports and not b.transports


# -- churn -----------------------------------------------------------------------------
def run_churn(seed: int) -> tuple[Simulator, dict[int, list[int]]]:
    """20 nodes on a ring with chords; the first builds circuits, then 6 join and 6 leave
    (never the first) at times drawn from the seed."""
    sim = Simulator(seed)
    nodes = [sim.add_node() for _ in range(20)]
    for i, n in enumerate(nodes):
        for step in (1, 3):
            sim.connect(n, nodes[(i + step) % len(nodes)])
    assert sim.run(lambda: all(len(n.node.peers()) == 4 for n in nodes), max_time=30)
    client = nodes[0]
    paths = {
        cid: [r.index, d.index]
        for r, d in ((nodes[1], nodes[2]), (nodes[3], nodes[4]), (nodes[19], nodes[18]))
        if (cid := build(sim, client, [r, d])) is not None
    }
    assert len(paths) == 3
    start = sim.now
    for when, fault in churn(
        sim.rng.fork(b"plan"), start=start, end=start + 30, joins=6, leaves=6, spare=[0]
    ):
        sim.at(when, fault)
    sim.run(max_time=start + 30 + 2 * client.node.config.link_timeout)
    return sim, paths


def check_consistent(sim: Simulator, paths: dict[int, list[int]]) -> None:
    live = sim.live_nodes()
    gone = [n for n in sim.nodes if not n.alive]
    assert len(sim.nodes) == 26 and len(live) == 20
    ids = {n.node.node_id for n in live}
    for n in live:
        assert set(n.node.peers()) <= ids, n.index  # nobody keeps a link to a leaver
        for m in live:  # links are symmetric
            assert peer_of(n, m) == peer_of(m, n), (n.index, m.index)
        # the driver's transports are exactly the node's links, all open
        links = {n.node.link_to(p) for p in n.node.peers()}
        assert set(n.transports) == links, n.index
        assert all(t.readyState == "open" for t in n.transports.values())
        assert ids <= set(n.node.directory) | {n.node.node_id}  # gossip reached joiners
    assert all(not n.transports for n in gone)
    assert not sim.held
    client = sim.nodes[0]
    for cid, path in paths.items():  # circuits live exactly as long as their relays
        alive = all(sim.nodes[i].alive for i in path)
        assert (cid in client.node.builder.built()) == alive, (cid, path)
    relayed = dict.fromkeys(range(len(sim.nodes)), 0)
    for cid, path in paths.items():
        if cid in client.node.builder.built():
            for i in path:
                relayed[i] += 1
    assert {n.index: len(n.node.relay) for n in live} == {n.index: relayed[n.index] for n in live}


def test_churn_on_20_nodes_stays_consistent_and_is_deterministic() -> None:
    sim, paths = run_churn(21)
    check_consistent(sim, paths)
    again, _ = run_churn(21)
    assert sim.trace_digest == again.trace_digest
    assert [n.alive for n in sim.nodes] == [n.alive for n in again.nodes]
    # a new circuit over whatever links churn left: client -> r -> d
    client = sim.nodes[0]
    by_id = {n.node.node_id: n for n in sim.live_nodes()}
    r = by_id[sorted(client.node.peers())[0]]
    d = by_id[next(p for p in sorted(r.node.peers()) if p != client.node.node_id)]
    assert build(sim, client, [r, d]) is not None


def test_the_churn_plan_comes_from_the_seed() -> None:
    def plan(seed: int) -> list[tuple[float, str]]:
        faults = churn(DeterministicRng(seed), start=10, end=20, joins=3, leaves=2, spare=[1])
        return [(t, f.describe()) for t, f in faults]

    assert plan(1) == plan(1) != plan(2)
    assert [t for t, _ in plan(1)] == sorted(t for t, _ in plan(1))
    assert all(10 <= t < 20 for t, _ in plan(1))
    assert sorted(d for _, d in plan(1)) == ["join links=3"] * 3 + ["leave None"] * 2
    with pytest.raises(LocalProtocolError):
        churn(DeterministicRng(1), start=5, end=5, joins=1, leaves=1)
    with pytest.raises(LocalProtocolError):
        churn(DeterministicRng(1), start=0, end=1, joins=-1, leaves=1)


def test_join_and_leave() -> None:
    sim = full_mesh(3)
    sim.apply(Join(links=2))
    joined = sim.nodes[-1]
    assert sim.run(lambda: len(joined.node.peers()) == 2, max_time=sim.now + 5)
    sim.apply(Leave(joined.index))
    sim.run(max_time=sim.now + 1)
    assert not joined.alive and not joined.transports
    assert all(len(n.node.peers()) == 2 for n in sim.nodes[:3])
    # a leaver closes in order: peers see the close, not a timeout
    codes = [e.code for n in sim.nodes[:3] for e in events_of(n, LinkClosed)]
    assert codes == [CloseCode.CONNECTION_FAILED] * 2
    sim.apply(Leave(None, spare=frozenset({0, 1})))  # the only candidate left: node 2
    assert [n.alive for n in sim.nodes] == [True, True, False, False]
    sim.apply(Leave(None, spare=frozenset({0, 1})))  # no candidate: nothing happens
    assert len(sim.live_nodes()) == 2


# -- link models -----------------------------------------------------------------------
def build_time(middle: LinkModel | None) -> float:
    sim = full_mesh(4, seed=8)
    source, r1, r2, dest = sim.nodes
    if middle is not None:
        sim.apply(LinkChange(r1.index, r2.index, middle))
    start = sim.now
    assert build(sim, source, [r1, r2, dest]) is not None
    return sim.now - start


def test_per_link_latency_and_bandwidth_change_the_build_time() -> None:
    base = build_time(None)
    slow = build_time(LinkModel(latency=0.250))
    # the CREATE crosses r1 -> r2 once, the CREATED comes back once
    assert abs((slow - base) - 2 * (0.250 - LinkModel().latency)) < 0.005
    narrow = build_time(LinkModel(bandwidth=20_000.0))
    create = lf.body_sizes(DEFAULT_GEOMETRY)[lf.FrameType.CREATE] + lf.FRAME_HEADER
    assert narrow - base >= create / 20_000.0 > 0.05


def test_a_model_set_when_connecting_applies_to_that_link_only() -> None:
    sim = Simulator(4)
    a, b, c = (sim.add_node() for _ in range(3))
    up: dict[bytes, float] = {}

    def note_up(sn: SimNode, event: Event) -> None:
        if sn is a and isinstance(event, LinkUp):
            up[event.peer_id] = sim.now

    sim.on_event = note_up
    sim.connect(a, b, LinkModel(latency=0.5))
    sim.connect(a, c)
    sim.run(lambda: len(a.node.peers()) == 2, max_time=10)
    # the dialler is up after a round trip: two crossings of the slow link
    assert up[c.node.node_id] < 0.1 < 1.0 <= up[b.node.node_id] < 1.1
    with pytest.raises(LocalProtocolError):
        sim.apply(LinkChange(b.index, c.index, LinkModel()))  # no such link


def test_link_models_reject_impossible_values() -> None:
    for bad in ({"latency": -1.0}, {"bandwidth": 0.0}, {"loss": 1.0}, {"rto": -0.1}):
        with pytest.raises(LocalProtocolError):
            LinkModel(**bad)


# -- the trace and the logs --------------------------------------------------------------
def faulted_digest(crash_at: float) -> str:
    sim = full_mesh(4, seed=9)
    sim.at(sim.now + crash_at, Crash(2))
    sim.run(max_time=sim.now + 10)
    return sim.trace_digest


def test_faults_enter_the_trace_digest() -> None:
    assert faulted_digest(1.0) == faulted_digest(1.0) != faulted_digest(2.0)
    calm = full_mesh(4, seed=9)
    calm.run(max_time=calm.now + 10)
    assert calm.trace_digest != faulted_digest(1.0)


def test_the_event_log_stays_bounded_under_a_long_run() -> None:
    assert Simulator(1).event_log == DEFAULT_EVENT_LOG
    sim = Simulator(10, event_log=16)
    source, relay, dest = (sim.add_node() for _ in range(3))
    for m, n in ((source, relay), (relay, dest), (source, dest)):
        sim.connect(m, n)
    sim.run(lambda: len(source.node.peers()) == 2, max_time=10)
    accept_streams(sim, dest)
    for _ in range(3):
        cid = build(sim, source, [relay, dest])
        assert cid is not None
        start_transfer(sim, source, cid, 500_000)
        sim.run(max_time=sim.now + 30)
    sim.run(max_time=sim.now + 3600)  # an idle hour of keepalives
    assert dest.event_count > 10 * 16
    assert len(dest.events) == 16
    assert len(dest.events_since(dest.event_count - 10)) == 10
    assert dest.events_since(0) == list(dest.events)
    assert dest.events_since(dest.event_count) == []
    with pytest.raises(LocalProtocolError):
        SimNode(0, source.node, event_log=0)


# -- the links under faults --------------------------------------------------------------
def linked(sim: Simulator) -> tuple[MemoryTransport, MemoryTransport]:
    a = MemoryTransport(sim, sim.model, b"x", "0>1", ends=(0, 1))
    b = MemoryTransport(sim, sim.model, b"x", "1>0", ends=(1, 0))
    a.peer, b.peer = b, a
    return a, b


def settle(sim: Simulator) -> None:
    sim.run(max_time=sim.now + 10)


def two_nodes(seed: int = 1) -> Simulator:
    sim = Simulator(seed)
    sim.add_node()
    sim.add_node()
    return sim


def test_close_delivers_what_was_sent_and_abort_loses_it() -> None:
    for ending in ("close", "abort"):
        sim = two_nodes()
        a, b = linked(sim)
        got: list[bytes | None] = []
        b.onmessage = got.append
        b.onclose = lambda got=got: got.append(None)
        a.send(b"one")
        a.send(b"two")
        if ending == "close":
            a.close()
        else:
            a.abort("crashed")
        settle(sim)
        assert got == ([b"one", b"two", None] if ending == "close" else [None])
        assert a.readyState == b.readyState == "closed"


def test_a_blackholed_end_drops_everything_and_never_closes() -> None:
    sim = two_nodes()
    a, b = linked(sim)
    got: list[bytes] = []
    b.onmessage = got.append
    a.send(b"before")
    sim.apply(Blackhole(1))
    a.send(b"after")
    a.close()
    settle(sim)
    assert got == [] and b.readyState == "open"


def test_what_a_partition_holds_is_bounded() -> None:
    sim = two_nodes()
    a, b = linked(sim)
    got: list[bytes | None] = []
    b.onmessage = got.append
    b.onclose = lambda: got.append(None)
    cut = Partition.between([0], [1])
    sim.apply(cut)
    for i in range(MAX_HELD + 1):
        a.send(i.to_bytes(4, "big"))
    settle(sim)
    assert a.readyState == "closed" and a.error is not None and "retransmission" in a.error
    assert len(sim.held) == 1 and got == []  # only the close waits
    sim.apply(Heal(cut))
    settle(sim)
    assert got == [None]
    assert not sim.held


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["send", "cut", "heal", "wait"]), max_size=60))
def test_partitions_delay_but_never_reorder_or_lose(plan: list[str]) -> None:
    """Any sequence of sends, cuts, heals and waits: once healed, everything sent arrives,
    once and in order."""
    sim = two_nodes()
    a, b = linked(sim)
    got: list[bytes] = []
    b.onmessage = got.append
    sent: list[bytes] = []
    cut: Partition | None = None
    for step in plan:
        if step == "send":
            sent.append(len(sent).to_bytes(2, "big"))
            a.send(sent[-1])
        elif step == "cut" and cut is None:
            cut = Partition.between([0], [1])
            sim.apply(cut)
        elif step == "heal" and cut is not None:
            sim.apply(Heal(cut))
            cut = None
        elif step == "wait":
            sim.run(max_time=sim.now + 0.005)
    if cut is not None:
        sim.apply(Heal(cut))
    settle(sim)
    assert got == sent
    assert not sim.held


def test_faults_reject_what_cannot_happen() -> None:
    sim = two_nodes()
    with pytest.raises(LocalProtocolError):
        Partition.between([0, 1], [1])
    with pytest.raises(LocalProtocolError):
        Partition.between([], [1])
    with pytest.raises(LocalProtocolError):
        sim.apply(Heal(Partition.between([0], [1])))  # not active
    with pytest.raises(LocalProtocolError):
        sim.apply(Partition.between([0], [7]))  # no node 7
    with pytest.raises(LocalProtocolError):
        Join(links=-1)
    with pytest.raises(LocalProtocolError):
        sim.apply(TamperLink(0, 1, None))  # no link
    sim.apply(Crash(1))
    for fault in (Crash(1), Blackhole(1), Leave(1)):
        with pytest.raises(LocalProtocolError):
            sim.apply(fault)  # already down
    with pytest.raises(LocalProtocolError):
        sim.connect(sim.nodes[0], sim.nodes[1])
