"""Sessions on a node's circuits (zmesh/circuit/sessions.py): the client's sessions over
their legs, the final hop's sessions found by LINK, and what ends them; managed sessions
(connect) and how they heal: standby circuits, hedged builds, retries with backoff."""

import pytest
from mesh import (
    accept_streams,
    build,
    events_of,
    finished,
    full_mesh,
    open_stream,
    received,
    send_all,
)

from zmesh.circuit import sessions as sessions_module
from zmesh.circuit.sessions import (
    SessionClosed,
    SessionLegLost,
    SessionStreamEvent,
)
from zmesh.errors import CloseCode, LocalProtocolError
from zmesh.node import CircuitClosed
from zmesh.session.endpoint import StreamOpened
from zmesh.session.frames import TOKEN_SIZE, LinkFrame, OpenFrame, PingFrame
from zmesh.session.multipath import SERVER_GRACE
from zmesh.sim import Blackhole, Crash, SimNode


def closed(sn: SimNode, cid: int) -> list[CloseCode]:
    return [e.code for e in events_of(sn, CircuitClosed) if e.circuit_id == cid]


def server_session(sn: SimNode) -> int:
    """The one session the final hop ``sn`` has."""
    ids = sn.node.sessions.ids()
    assert len(ids) == 1, ids
    return ids[0]


# -- local errors ---------------------------------------------------------------------------
def test_calls_on_unknown_sessions_and_streams_are_local_errors() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    sessions = a.node.sessions
    for call in (
        lambda: sessions.open(99, "x", sim.now),
        lambda: sessions.send(99, 1, b"x", sim.now),
        lambda: sessions.finish(99, 1, sim.now),
        lambda: sessions.accept(99, 1, sim.now),
        lambda: sessions.reset(99, 1, 0, sim.now),
        lambda: sessions.close(99, sim.now),
        lambda: sessions.info(99, sim.now),
        lambda: sessions.add_leg(99, 1, sim.now),
    ):
        with pytest.raises(LocalProtocolError):
            call()
    sessions.consume(99, 1, 10, sim.now)  # a session that already ended: ignored
    assert sessions.buffered(99, 1) == 0
    cid = build(sim, a, [b])
    assert cid is not None
    accept_streams(sim, b)
    session, sid = open_stream(sim, a, [cid], "example.org:80")
    with pytest.raises(LocalProtocolError):
        sessions.send(session, sid + 1, b"x", sim.now)
    with pytest.raises(LocalProtocolError):
        sessions.finish(session, sid + 1, sim.now)
    sessions.consume(session, sid + 1, 10, sim.now)  # a stream that already ended: ignored
    assert sessions.buffered(session, sid + 1) == 0
    with pytest.raises(LocalProtocolError):
        sessions.accept(session, sid, sim.now)  # only the final hop accepts
    sim.run(max_time=sim.now + 1)
    with pytest.raises(LocalProtocolError):
        b.node.sessions.open(server_session(b), "x", sim.now)  # only the client opens


def test_create_and_add_leg_refuse_what_cannot_be_a_leg(monkeypatch: pytest.MonkeyPatch) -> None:
    sim = full_mesh(3)
    a, r, b = sim.nodes
    sessions = a.node.sessions
    session = sim.call(a, lambda: sessions.create(sim.now))
    with pytest.raises(LocalProtocolError, match="not a built"):
        sessions.add_leg(session, 12345, sim.now)
    building = sim.call(a, lambda: a.node.build_circuit([sim.descriptor(b)], sim.now))
    with pytest.raises(LocalProtocolError, match="not a built"):
        sessions.add_leg(session, building, sim.now)  # CREATED has not come back yet
    cid = build(sim, a, [r, b])
    assert cid is not None
    sim.call(a, lambda: sessions.add_leg(session, cid, sim.now))
    other = sim.call(a, lambda: sessions.create(sim.now))
    for target in (session, other):
        with pytest.raises(LocalProtocolError, match="a leg already"):
            sessions.add_leg(target, cid, sim.now)
    # the final hop's circuit is no client circuit of b's
    sim.run(max_time=sim.now + 1)
    (leg,) = b.node.sessions.info(server_session(b), sim.now).legs
    with pytest.raises(LocalProtocolError, match="not a built"):
        b.node.sessions.add_leg(b.node.sessions.create(sim.now), leg.leg_id, sim.now)
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", len(sessions))
    with pytest.raises(LocalProtocolError, match="sessions exist"):
        sessions.create(sim.now)


# -- hostile or confused peers ----------------------------------------------------------------
def test_frames_on_a_client_circuit_that_is_no_leg_close_it() -> None:
    """The client sends LINK by hand on a circuit it never made a leg: the final hop's
    answer (PONG) reaches a circuit without a session, and the client closes it."""
    sim = full_mesh(2)
    a, b = sim.nodes
    cid = build(sim, a, [b])
    assert cid is not None
    link = LinkFrame(b"\x01" * TOKEN_SIZE, 0)
    sim.call(a, lambda: a.node.builder.send_frames(cid, [link, PingFrame(1)], sim.now))
    sim.run(max_time=sim.now + 2)
    assert closed(a, cid) == [CloseCode.PROTOCOL]
    assert not a.node.builder.built()
    assert not events_of(a, SessionStreamEvent)


def test_a_first_cell_without_link_closes_the_final_hops_circuit() -> None:
    sim = full_mesh(3)
    a, r, b = sim.nodes
    cid = build(sim, a, [r, b])
    assert cid is not None
    sim.call(a, lambda: a.node.builder.send_frames(cid, [OpenFrame(1, "x:1")], sim.now))
    sim.run(max_time=sim.now + 2)
    assert [e.code for e in events_of(b, CircuitClosed)] == [CloseCode.PROTOCOL]
    assert closed(a, cid) == [CloseCode.PROTOCOL]
    assert len(b.node.sessions) == 0 and not events_of(b, SessionStreamEvent)
    assert not len(r.node.relay) and not len(b.node.relay)


def test_max_sessions_at_the_final_hop_refuses_with_resource(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 2)
    sim = full_mesh(4)
    b = sim.nodes[3]
    accept_streams(sim, b)
    cids = {}
    for client in sim.nodes[:3]:
        cid = build(sim, client, [b])
        assert cid is not None
        cids[client.index] = cid
        open_stream(sim, client, [cid], "x:1")
        sim.run(max_time=sim.now + 1)
    assert len(b.node.sessions) == 2
    first, second, third = sim.nodes[:3]
    assert not closed(first, cids[first.index]) and not closed(second, cids[second.index])
    assert closed(third, cids[third.index]) == [CloseCode.RESOURCE]
    opened = [e for e in events_of(b, SessionStreamEvent) if isinstance(e.event, StreamOpened)]
    assert len(opened) == 2


def test_a_protocol_error_from_the_peer_ends_the_whole_session() -> None:
    """The final hop "opens" a stream (only clients do): the client fails the session at
    once, on both legs, with a SessionClosed; the final hop then loses both legs."""
    sim = full_mesh(4)
    a, r1, r2, b = sim.nodes
    cids = [build(sim, a, [r, b]) for r in (r1, r2)]
    assert None not in cids
    legs = [c for c in cids if c is not None]
    accept_streams(sim, b)
    session, _ = open_stream(sim, a, legs, "x:1")
    sim.run(max_time=sim.now + 1)
    server = server_session(b)
    hostile = b.node.sessions.info(server, sim.now).legs[0].leg_id
    sim.call(b, lambda: b.node.relay.send_frames(hostile, [OpenFrame(9, "y:1")], sim.now))
    sim.run(max_time=sim.now + 1)
    ended = events_of(a, SessionClosed)
    assert len(ended) == 1 and ended[0].session_id == session
    assert ended[0].reason.startswith("protocol error")
    assert all(closed(a, cid) == [CloseCode.PROTOCOL] for cid in legs)
    assert len(a.node.sessions) == 0 and not a.node.builder.built()
    assert len(events_of(b, CircuitClosed)) == 2
    assert [e.reason for e in events_of(b, SessionLegLost)] == ["closed", "closed"]
    # the final hop's session, without legs, fails after its grace time (the longer one
    # of a server, so that it outlives a client that still heals)
    lost_at = sim.now
    assert sim.run(lambda: bool(events_of(b, SessionClosed)), max_time=sim.now + SERVER_GRACE + 2)
    assert SERVER_GRACE - 1 < sim.now - lost_at < SERVER_GRACE + 1
    assert len(b.node.sessions) == 0


def test_link_on_a_linked_leg_ends_the_final_hops_session() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    cid = build(sim, a, [b])
    assert cid is not None
    accept_streams(sim, b)
    open_stream(sim, a, [cid], "x:1")
    sim.run(max_time=sim.now + 1)
    server = server_session(b)
    link = LinkFrame(b"\x02" * TOKEN_SIZE, 1)
    sim.call(a, lambda: a.node.builder.send_frames(cid, [link], sim.now))
    sim.run(max_time=sim.now + 1)
    assert [e.session_id for e in events_of(b, SessionClosed)] == [server]
    assert [e.code for e in events_of(b, CircuitClosed)] == [CloseCode.PROTOCOL]
    assert closed(a, cid) == [CloseCode.PROTOCOL]


# -- legs ------------------------------------------------------------------------------------
def test_two_legs_to_the_same_final_hop_form_one_server_session() -> None:
    sim = full_mesh(4)
    a, r1, r2, b = sim.nodes
    legs = [build(sim, a, [r, b]) for r in (r1, r2)]
    assert None not in legs
    accept_streams(sim, b)
    session, sid = open_stream(sim, a, [c for c in legs if c is not None], "x:1")
    assert sim.run(lambda: len(b.node.sessions) == 1, max_time=sim.now + 2)
    data = send_all(sim, a, session, sid, 1_000_000)
    assert sim.run(lambda: finished(b), max_time=sim.now + 60)
    assert received(b) == data
    info = b.node.sessions.info(server_session(b), sim.now)
    assert not info.client and len(info.legs) == 2
    assert info.bytes_received == len(data)
    assert {b.node.sessions.session_of(leg.leg_id) for leg in info.legs} == {info.session_id}
    assert sorted(leg.leg_id for leg in a.node.sessions.info(session, sim.now).legs) == sorted(
        c for c in legs if c is not None
    )


def test_killing_one_legs_middle_relay_mid_transfer_loses_no_byte() -> None:
    sim = full_mesh(4)
    a, r1, r2, b = sim.nodes
    legs = [build(sim, a, [r, b]) for r in (r1, r2)]
    assert None not in legs
    accept_streams(sim, b)
    session, sid = open_stream(sim, a, [c for c in legs if c is not None], "x:1")
    data = send_all(sim, a, session, sid, 3_000_000)
    assert sim.run(lambda: len(received(b)) > 500_000, max_time=sim.now + 30)
    sim.apply(Crash(r1.index))
    assert sim.run(lambda: finished(b), max_time=sim.now + 60)
    assert received(b) == data  # every byte, in order, once
    assert [(e.circuit_id, e.reason) for e in events_of(a, SessionLegLost)] == [(legs[0], "closed")]
    assert not events_of(a, SessionClosed)
    info = a.node.sessions.info(session, sim.now)
    assert [leg.leg_id for leg in info.legs] == [legs[1]]
    assert info.failovers == 1


def test_the_timer_fires_for_a_stalled_leg() -> None:
    """A middle relay goes silent without closing anything: the session's timer finds the
    leg stalled (no PONG) long before the link timeout, closes its circuit and resends."""
    sim = full_mesh(4)
    a, r1, r2, b = sim.nodes
    legs = [build(sim, a, [r, b]) for r in (r1, r2)]
    assert None not in legs
    accept_streams(sim, b)
    session, sid = open_stream(sim, a, [c for c in legs if c is not None], "x:1")
    data = send_all(sim, a, session, sid, 2_000_000)
    assert sim.run(lambda: len(received(b)) > 300_000, max_time=sim.now + 30)
    silent_at = sim.now
    sim.apply(Blackhole(r1.index))
    assert sim.run(lambda: bool(events_of(a, SessionLegLost)), max_time=sim.now + 30)
    assert sim.now - silent_at < a.node.config.link_timeout
    assert [(e.circuit_id, e.reason) for e in events_of(a, SessionLegLost)] == [
        (legs[0], "stalled")
    ]
    assert closed(a, legs[0]) == [CloseCode.TIMEOUT]
    assert sim.run(lambda: finished(b), max_time=sim.now + 60)
    assert received(b) == data
    assert a.node.sessions.info(session, sim.now).longest_stall < a.node.config.link_timeout
