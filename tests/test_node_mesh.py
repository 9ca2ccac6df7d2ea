"""Mesh-level node features: link flow control, descriptor gossip, signaling, CONNECTED."""

import itertools

import pytest
from mesh import accept_streams, build, events_of, full_mesh, open_stream, received

from zmesh.circuit.sessions import SessionStreamEvent
from zmesh.errors import CloseCode
from zmesh.link import frames as lf
from zmesh.link.connection import LINK_WINDOW
from zmesh.node import DescriptorLearned, LinkClosed, SignalReceived
from zmesh.session.endpoint import StreamConnected, StreamOpened, StreamReset
from zmesh.sim import Simulator


def test_gossip_teaches_every_node_every_descriptor() -> None:
    sim = Simulator(3)
    nodes = [sim.add_node() for _ in range(5)]
    for a, b in itertools.pairwise(nodes):  # a line: 0-1-2-3-4
        sim.connect(a, b)
    sim.run(max_time=10)
    for n in nodes:
        others = {m.node.node_id for m in nodes if m is not n}
        assert set(n.node.directory) == others
        for desc in n.node.directory.values():
            desc.verify(sim.now)
    learned = events_of(nodes[0], DescriptorLearned)
    assert {e.descriptor.node_id for e in learned} == set(nodes[0].node.directory)


def test_bad_descriptor_is_dropped_and_the_link_stays_up() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    link = b.node.link_to(a.node.node_id)
    assert link is not None
    forged = bytearray(sim.descriptor(a).encode())
    forged[-5] ^= 1  # breaks the signature
    for junk in (bytes(forged), b"", b"\x01garbage"):
        sim.call(
            b, lambda j=junk: b.node.receive(link, lf.encode_frame(lf.DescriptorFrame(j)), sim.now)
        )
    assert b.node.link_to(a.node.node_id) == link
    assert not events_of(b, LinkClosed)


def test_signals_reach_a_node_we_have_no_link_to_and_come_back() -> None:
    sim = Simulator(4)
    a, b, c = (sim.add_node() for _ in range(3))
    sim.connect(a, b)
    sim.connect(b, c)
    sim.run(max_time=10)
    assert a.node.link_to(c.node.node_id) is None
    assert c.node.node_id in a.node.directory  # learned through b
    assert sim.call(a, lambda: a.node.send_signal(c.node.node_id, b"offer", sim.now))
    sim.run(max_time=sim.now + 1)
    got = events_of(c, SignalReceived)
    assert [(s.origin, s.payload) for s in got] == [(a.node.node_id, b"offer")]
    assert sim.call(c, lambda: c.node.send_signal(a.node.node_id, b"answer", sim.now))
    sim.run(max_time=sim.now + 1)
    assert [s.payload for s in events_of(a, SignalReceived)] == [b"answer"]


def test_signal_without_route_is_refused_locally_and_dropped_remotely() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    assert not a.node.send_signal(b"\x42" * 32, b"x", sim.now)
    link = b.node.link_to(a.node.node_id)
    assert link is not None
    frame = lf.Signal(a.node.node_id, b"\x42" * 32, 3, b"x")
    sim.call(b, lambda: b.node.receive(link, lf.encode_frame(frame), sim.now))
    assert not events_of(b, SignalReceived)
    assert b.node.link_to(a.node.node_id) == link


def test_link_credit_bounds_frames_in_flight() -> None:
    """A slow link: the sender never has more than LINK_WINDOW counted frames unanswered."""
    sim = full_mesh(3)
    source, relay, dest = sim.nodes
    cid = build(sim, source, [relay, dest])
    assert cid is not None
    link = source.node.link_to(relay.node.node_id)
    assert link is not None
    transport = source.transports[link]
    in_flight: list[int] = []
    real_send = transport.send
    sent = [0]

    def counting_send(data: bytes) -> None:
        if data[0] not in (lf.FrameType.CREDIT, lf.FrameType.CLOSE):
            sent[0] += 1
        in_flight.append(sent[0] - credited[0])
        real_send(data)

    credited = [0]
    real_receive = source.node.receive

    def on_receive(link_id: int, data: bytes, now: float) -> None:
        if data[0] == lf.FrameType.CREDIT:
            credited[0] += int.from_bytes(data[4:8], "big")
        real_receive(link_id, data, now)

    transport.send = counting_send  # type: ignore[method-assign]
    source.node.receive = on_receive  # type: ignore[method-assign]
    data = bytes(3_000_000)
    accept_streams(sim, dest)
    session, sid = open_stream(sim, source, [cid], "x")
    sim.call(source, lambda: source.node.sessions.send(session, sid, data, sim.now))
    sim.call(source, lambda: source.node.sessions.finish(session, sid, sim.now))
    sim.run(max_time=sim.now + 30)
    assert received(dest) == data
    assert max(in_flight) <= LINK_WINDOW


def test_peer_overrunning_the_link_window_is_disconnected() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    link = b.node.link_to(a.node.node_id)
    assert link is not None
    padding = lf.encode_frame(lf.Padding(0))
    first = LINK_WINDOW // 2 - 1  # not yet enough to earn credit back
    sim.call(b, lambda: b.node.receive(link, padding * first, sim.now))
    assert b.node.link_to(a.node.node_id) == link  # within the window: fine
    # a flood that ignores credit: the first frame beyond the window closes the link (one
    # message: credit is returned after a message, so a whole window and one is too many
    # whatever was returned before)
    sim.call(b, lambda: b.node.receive(link, padding * (LINK_WINDOW + 1), sim.now))
    assert b.node.link_to(a.node.node_id) is None
    assert events_of(b, LinkClosed)[-1].code == CloseCode.RESOURCE


def test_forged_credit_is_rejected() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    link = b.node.link_to(a.node.node_id)
    assert link is not None
    b.node.receive(link, lf.encode_frame(lf.Credit(LINK_WINDOW + 1)), sim.now)
    assert b.node.link_to(a.node.node_id) is None


@pytest.mark.parametrize("accept", [True, False])
def test_endpoint_accepts_or_refuses_a_stream(accept: bool) -> None:
    sim = full_mesh(4)
    source, r1, r2, exit_ = sim.nodes
    cid = build(sim, source, [r1, r2, exit_])
    assert cid is not None
    _, sid = open_stream(sim, source, [cid], "example.org:80")
    sim.run(max_time=sim.now + 1)
    opened = [e for e in events_of(exit_, SessionStreamEvent) if isinstance(e.event, StreamOpened)]
    assert [(o.event.target) for o in opened] == ["example.org:80"]
    exit_session = opened[0].session_id
    sessions = exit_.node.sessions
    if accept:
        sim.call(exit_, lambda: sessions.accept(exit_session, sid, sim.now))
    else:
        sim.call(exit_, lambda: sessions.reset(exit_session, sid, 5, sim.now))
    sim.run(max_time=sim.now + 1)
    events = [e.event for e in events_of(source, SessionStreamEvent)]
    assert events == ([StreamConnected(sid)] if accept else [StreamReset(sid, 5)])
