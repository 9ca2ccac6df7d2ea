"""The node end to end on simulated links: circuits, streams, teardown, hostile input."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh import accept_streams, build, events_of, finished, full_mesh, open_stream, received

from zmesh.circuit.sessions import SessionStreamEvent
from zmesh.errors import CloseCode, LocalProtocolError
from zmesh.identity import Identity
from zmesh.link import frames as lf
from zmesh.node import CircuitClosed, LinkClosed, Node
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import StreamConnected
from zmesh.sim import MemoryTransport, Partition, Simulator, Tamper, TamperLink


def transfer(sim: Simulator, hops: int, size: int, seed: int = 3) -> None:
    source, *relays, dest = sim.nodes[: hops + 2]
    cid = build(sim, source, [*relays, dest])
    assert cid is not None
    data = DeterministicRng(seed).bytes(size)
    accept_streams(sim, dest)
    session, sid = open_stream(sim, source, [cid], "test")
    sim.call(source, lambda: source.node.sessions.send(session, sid, data, sim.now))
    sim.call(source, lambda: source.node.sessions.finish(session, sid, sim.now))
    assert sim.run(lambda: finished(dest), max_time=sim.now + 60)
    assert received(dest) == data


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_stream_through_circuits_of_every_length(hops: int) -> None:
    sim = full_mesh(hops + 2)
    transfer(sim, hops, 300_000)


def test_stream_both_directions_and_clean_close() -> None:
    sim = full_mesh(4)
    source, r1, r2, dest = sim.nodes
    cid = build(sim, source, [r1, r2, dest])
    assert cid is not None
    accept_streams(sim, dest)
    session, sid = open_stream(sim, source, [cid], "echo")
    sim.call(source, lambda: source.node.sessions.send(session, sid, b"ping" * 5000, sim.now))
    sim.call(source, lambda: source.node.sessions.finish(session, sid, sim.now))
    assert sim.run(lambda: finished(dest), max_time=10)
    assert received(dest) == b"ping" * 5000
    dest_session = events_of(dest, SessionStreamEvent)[0].session_id
    sessions = dest.node.sessions
    sim.call(dest, lambda: sessions.send(dest_session, sid, b"pong" * 5000, sim.now))
    sim.call(dest, lambda: sessions.finish(dest_session, sid, sim.now))
    assert sim.run(lambda: finished(source), max_time=20)
    assert received(source) == b"pong" * 5000
    sim.run(max_time=sim.now + 5)
    # both ends dropped the finished stream (the sessions and their legs live on)
    assert source.node.sessions.info(session, sim.now).streams == 0
    assert dest.node.sessions.info(dest_session, sim.now).streams == 0


def test_flow_control_bounds_what_is_in_flight() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    cid = build(sim, source, [relay, dest])
    assert cid is not None
    accept_streams(sim, dest)
    session, sid = open_stream(sim, source, [cid], "x")
    sessions = source.node.sessions
    assert sim.run(
        lambda: any(
            isinstance(e, SessionStreamEvent) and isinstance(e.event, StreamConnected)
            for e in source.events
        ),
        max_time=sim.now + 5,
    )
    size = 5 * 1024 * 1024
    sim.call(source, lambda: sessions.send(session, sid, bytes(size), sim.now))
    # nothing has been acknowledged yet: at most one window is out
    assert size - sessions.buffered(session, sid) <= source.node.config.stream_window
    assert sessions.buffered(session, sid) >= 4 * 1024 * 1024


def _flip_next(kind: lf.FrameType, pos: int) -> Tamper:
    """A tamper hook: flip one bit at byte ``pos`` of the next frame of ``kind``."""
    done = []

    def flip(data: bytes) -> bytes:
        if done or data[0] != kind:
            return data
        done.append(True)
        buf = bytearray(data)
        buf[pos] ^= 1
        return bytes(buf)

    return flip


def test_tampered_cell_tears_the_circuit_down_everywhere() -> None:
    sim = full_mesh(5)
    source, r1, r2, r3, dest = sim.nodes
    cid = build(sim, source, [r1, r2, dest])
    assert cid is not None
    # r1 (malicious) flips a bit in the next cell it forwards to r2
    sim.apply(TamperLink(r1.index, r2.index, _flip_next(lf.FrameType.CELL, pos=777)))
    accept_streams(sim, dest)
    session, sid = open_stream(sim, source, [cid], "x")
    sim.call(source, lambda: source.node.sessions.send(session, sid, b"hello", sim.now))
    sim.run(max_time=sim.now + 5)
    closed = events_of(source, CircuitClosed)
    assert [c.code for c in closed] == [CloseCode.AUTH]
    assert events_of(dest, CircuitClosed)[0].code == CloseCode.AUTH
    for n in (r1, r2, dest, source):
        assert not len(n.node.relay), n.index  # every hop forgot the circuit
        assert not n.node.builder.built(), n.index
    assert not received(dest)
    # the nodes keep serving: a fresh circuit works
    cid2 = build(sim, source, [r3, r2, dest])
    assert cid2 is not None


def test_tampered_created_fails_key_confirmation() -> None:
    sim = full_mesh(4)
    source, r1, r2, dest = sim.nodes
    flip = _flip_next(lf.FrameType.CREATED, pos=lf.FRAME_HEADER + 4 + 40)
    sim.apply(TamperLink(r1.index, source.index, flip))
    assert build(sim, source, [r1, r2, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code == CloseCode.AUTH


def test_replayed_create_is_rejected_by_the_relay() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    sent: list[bytes] = []
    link = source.node.link_to(relay.node.node_id)
    assert link is not None
    transport = source.transports[link]
    real_send = transport.send

    def spy(data: bytes) -> None:
        if data[0] == lf.FrameType.CREATE:
            sent.append(data)
        real_send(data)

    transport.send = spy  # type: ignore[method-assign]
    assert build(sim, source, [relay, dest]) is not None
    # an observer replays the CREATE on a fresh circuit id
    create = lf.FrameDecoder(relay.node.geometry).feed(sent[0])[0]
    assert isinstance(create, lf.Create)
    replay = lf.encode_frame(lf.Create(create.circ_id ^ 1, create.epoch, create.header))
    relay_link = relay.node.link_to(source.node.node_id)
    assert relay_link is not None
    relay.node.receive(relay_link, replay, sim.now)
    out = relay.node.datagrams_to_send(0.0)
    frames = [f for _, data in out for f in lf.FrameDecoder(relay.node.geometry).feed(data)]
    assert frames == [lf.Destroy(create.circ_id ^ 1, CloseCode.REPLAY)]


def test_relay_refuses_a_circuit_to_an_unlinked_node() -> None:
    sim = Simulator(2)
    a, b, c = (sim.add_node() for _ in range(3))
    sim.connect(a, b)  # b has no link to c
    sim.run(lambda: bool(b.node.peers()), max_time=5)
    assert build(sim, a, [b, c]) is None
    assert events_of(a, CircuitClosed)[-1].code == CloseCode.CONNECTION_FAILED


def test_link_to_an_impostor_fails_authentication() -> None:
    sim = Simulator(4)
    a, b, c = (sim.add_node() for _ in range(3))
    # a believes it dials b but reaches c (e.g. a swapped signaling answer)
    binding = b"\x01" * 32
    ta = MemoryTransport(sim, sim.model, binding, "a>c")
    tc = MemoryTransport(sim, sim.model, binding, "c>a")
    ta.peer, tc.peer = tc, ta
    a.transports[90], c.transports[91] = ta, tc
    ta.onmessage = lambda d: sim.call(a, lambda: a.node.receive(90, d, sim.now))
    tc.onmessage = lambda d: sim.call(c, lambda: c.node.receive(91, d, sim.now))
    sim.call(c, lambda: c.node.open_link(91, sim.now, binding=binding))
    peer = sim.descriptor(b)
    sim.call(a, lambda: a.node.open_link(90, sim.now, binding=binding, peer=peer))
    sim.run(max_time=20)
    assert events_of(a, LinkClosed)[0].code in (CloseCode.AUTH, CloseCode.TIMEOUT)
    assert not a.node.peers()


def test_handshake_times_out() -> None:
    sim = Simulator(5)
    a = sim.add_node()
    sim.call(a, lambda: a.node.open_link(7, sim.now, binding=b"x"))
    sim.run(max_time=60)
    assert events_of(a, LinkClosed)[0].code == CloseCode.TIMEOUT


def test_a_silent_hop_fails_the_build_by_link_timeout() -> None:
    """The relay's link to the final hop goes silent (a partition between the two):
    keepalives notice within link_timeout and the circuit fails long before the build
    timeout."""
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    sim.apply(Partition.between([relay.index], [dest.index]))
    start = sim.now
    assert build(sim, source, [relay, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code == CloseCode.CONNECTION_FAILED
    assert sim.now - start < relay.node.config.link_timeout + 1 < relay.node.config.build_timeout
    assert relay.node.link_to(dest.node.node_id) is None


def test_build_timeout_when_the_final_hop_never_answers() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes

    # the final hop's CREATED never leaves it; its link stays up (keepalives flow)
    def withhold(data: bytes) -> bytes | None:
        return None if data[0] == lf.FrameType.CREATED else data

    sim.apply(TamperLink(dest.index, relay.index, withhold))
    start = sim.now
    assert build(sim, source, [relay, dest]) is None
    assert events_of(source, CircuitClosed)[-1].code == CloseCode.TIMEOUT
    assert sim.now - start >= source.node.config.build_timeout


def test_keepalives_keep_idle_links_up() -> None:
    sim = full_mesh(3)
    sim.run(max_time=sim.now + 60)
    assert all(len(n.node.peers()) == 2 for n in sim.nodes)
    assert not any(events_of(n, LinkClosed) for n in sim.nodes)


def test_old_epoch_keys_stop_working_after_rotation() -> None:
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    old = [sim.descriptor(relay), sim.descriptor(dest)]
    epoch_length = relay.node.keyring.epoch_length
    sim.run(max_time=sim.now + 2.5 * epoch_length)  # two rotations: the old key is gone
    cid = sim.call(source, lambda: source.node.build_circuit(old, sim.now))
    sim.run(max_time=sim.now + 5)
    closed = events_of(source, CircuitClosed)
    assert any(e.circuit_id == cid and e.code == CloseCode.AUTH for e in closed)
    assert build(sim, source, [relay, dest]) is not None  # fresh descriptors work


def test_local_misuse_raises_local_errors() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    with pytest.raises(LocalProtocolError):
        a.node.build_circuit([], sim.now)
    with pytest.raises(LocalProtocolError):
        a.node.sessions.open(999, "x", sim.now)
    with pytest.raises(LocalProtocolError):
        a.node.sessions.add_leg(a.node.sessions.create(sim.now), 999, sim.now)
    with pytest.raises(LocalProtocolError):
        a.node.open_link(next(iter(a.transports)), sim.now, binding=b"")
    lonely = Node(Identity.generate(DeterministicRng(9)), DeterministicRng(10), 0.0)
    with pytest.raises(LocalProtocolError):
        lonely.build_circuit([sim.descriptor(b)], 0.0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.sampled_from(list(lf.FrameType)))
def test_fuzz_hostile_link_bytes_never_crash_the_node(data: bytes, kind: lf.FrameType) -> None:
    node = Node(Identity.generate(DeterministicRng(12)), DeterministicRng(13), 0.0)
    node.open_link(1, 0.0, binding=b"b")
    # raw garbage, and a well-framed body of each type with garbage inside
    node.receive(1, data, 0.0)
    node.open_link(2, 0.0, binding=b"b")
    node.receive(2, bytes([kind]) + len(data).to_bytes(3, "big") + data, 0.0)
    node.datagrams_to_send(0.0)
    while node.next_event() is not None:
        pass
    node.handle_timer(100.0)


def _frame_log(sim: Simulator) -> list[tuple[int, int, int, int]]:
    """Wrap every transport: log (sender, receiver, frame type, length) of each message."""
    log: list[tuple[int, int, int, int]] = []
    for sn in sim.nodes:
        for transport in sn.transports.values():
            peer = next(p for p in sim.nodes for t in p.transports.values() if t is transport.peer)
            real = transport.send

            def send(data: bytes, real=real, src=sn.index, dst=peer.index) -> None:
                log.append((src, dst, data[0], len(data)))
                real(data)

            transport.send = send  # type: ignore[method-assign]
    return log


FT = lf.FrameType
CIRCUIT_FRAMES = {FT.CREATE, FT.CREATED, FT.CELL, FT.DESTROY}


def _hop_view(log: list[tuple[int, int, int, int]], index: int) -> list[tuple[str, int, int]]:
    """The circuit traffic a node handled (gossip and link credit are per link, not per
    circuit, and depend on the mesh rather than on the circuit)."""
    seen = [("in", k, n) for s, d, k, n in log if d == index and k in CIRCUIT_FRAMES]
    seen += [("out", k, n) for s, d, k, n in log if s == index and k in CIRCUIT_FRAMES]
    return sorted(seen)


def test_relays_see_the_same_traffic_whatever_their_position() -> None:
    """Frame types and lengths a relay handles are identical as first or middle hop,
    on 2-relay and 3-relay paths: nothing tells the first hop that it is first."""
    views = []
    for relays in (2, 3):
        sim = full_mesh(relays + 2, seed=20 + relays)
        log = _frame_log(sim)
        source, *path = sim.nodes[: relays + 2]
        cid = build(sim, source, path)
        assert cid is not None
        accept_streams(sim, path[-1])
        session, sid = open_stream(sim, source, [cid], "x")
        sessions = source.node.sessions
        sim.call(source, lambda: sessions.send(session, sid, bytes(40_000), sim.now))  # noqa: B023 (runs now)
        sim.call(source, lambda: sessions.finish(session, sid, sim.now))  # noqa: B023
        sim.run(max_time=sim.now + 10)
        views += [_hop_view(log, r.index) for r in path[:-1]]
    assert len(views) == 5
    assert all(v == views[0] for v in views), views


_ESTABLISHED = full_mesh(3, seed=31)
_A, _B, _C = _ESTABLISHED.nodes
_CIRCUIT = build(_ESTABLISHED, _A, [_B, _C])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(lf.FrameType)),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=64),
    st.booleans(),
)
def test_fuzz_well_framed_garbage_on_an_open_link(
    kind: lf.FrameType, circ_id: int, seed: bytes, known_circuit: bool
) -> None:
    """Exact-size frames of every type with hostile contents, on a live link next to a
    live circuit: the node drops, destroys or closes, and never raises."""
    node = _B.node
    link = node.link_to(_A.node.node_id)
    if link is None:  # an earlier example closed it: that is a legal outcome
        return
    size = lf.body_sizes(node.geometry)[kind]
    if kind is lf.FrameType.PADDING:
        size = len(seed)
    body = (seed * (size // max(1, len(seed)) + 1))[:size] if seed else bytes(size)
    if known_circuit and kind in (lf.FrameType.CELL, lf.FrameType.DESTROY, lf.FrameType.CREATED):
        conn = node._links.get(link)
        circuits = list(conn.circuits) if conn is not None else []
        if circuits:
            body = circuits[0].to_bytes(4, "big") + body[4:]
    elif size >= 4:
        body = circ_id.to_bytes(4, "big") + body[4:]
    node.receive(link, bytes([kind]) + len(body).to_bytes(3, "big") + body, _ESTABLISHED.now)
    node.datagrams_to_send(0.0)
    while node.next_event() is not None:
        pass


def test_circuit_events_come_before_the_close_of_their_link() -> None:
    """One input carrying a stream's cell and then CLOSE: the stream and circuit events,
    then LinkClosed (the order drivers rely on)."""
    sim = full_mesh(2)
    a, b = sim.nodes
    cid = build(sim, a, [b])
    assert cid is not None
    link = a.node.link_to(b.node.node_id)
    b_link = b.node.link_to(a.node.node_id)
    assert link is not None and b_link is not None
    session = a.node.sessions.create(sim.now)
    a.node.sessions.add_leg(session, cid, sim.now)
    a.node.sessions.open(session, "x", sim.now)  # LINK and OPEN go out in one cell
    held = b"".join(d for lid, d in a.node.datagrams_to_send(sim.now) if lid == link)
    mark = b.event_count
    sim.call(b, lambda: b.node.receive(b_link, held + lf.encode_frame(lf.Close(0)), sim.now))
    kinds = [type(e).__name__ for e in b.events_since(mark)]
    assert kinds.index("CircuitClosed") < kinds.index("LinkClosed")
    assert kinds.index("SessionStreamEvent") < kinds.index("LinkClosed")


def test_a_peer_whose_link_fails_is_avoided_for_paths() -> None:
    from zmesh.node import LINK_FAILED
    from zmesh.sim.faults import Crash

    sim = full_mesh(3)
    a, _, c = sim.nodes
    sim.apply(Crash(c.index))
    assert sim.run(lambda: c.node.node_id not in a.node.peers(), max_time=sim.now + 10)
    avoidance = a.node.builder.avoidance
    assert avoidance.score(c.node.node_id, sim.now) == pytest.approx(LINK_FAILED, rel=0.05)
    assert c.node.node_id in avoidance.avoided_ids(sim.now + 200)
