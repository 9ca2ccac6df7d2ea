"""Streams: the application's stream API on circuit ends."""

import pytest
from mesh import build, full_mesh

from zmesh.errors import LocalProtocolError
from zmesh.node import CircuitStreamEvent
from zmesh.session.endpoint import StreamOpened


def test_stream_calls_on_unknown_circuits_and_streams_are_local_errors() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    streams = a.node.streams
    with pytest.raises(LocalProtocolError):
        streams.open(99, "x", sim.now)
    cid = build(sim, a, [b])
    assert cid is not None
    with pytest.raises(LocalProtocolError):
        streams.send(cid, 7, b"x", sim.now)
    with pytest.raises(LocalProtocolError):
        streams.finish(cid, 7, sim.now)
    streams.consume(cid, 7, 10, sim.now)  # a stream that already ended: ignored
    assert streams.buffered(cid, 7) == 0


def test_only_the_client_opens_streams_and_the_final_hop_accepts_them() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    cid = build(sim, a, [b])
    assert cid is not None
    sid = sim.call(a, lambda: a.node.streams.open(cid, "example.org:80", sim.now))
    sim.call(a, lambda: a.node.streams.send(cid, sid, b"x" * 100, sim.now))
    assert a.node.streams.buffered(cid, sid) == 0  # all of it went out
    sim.run(max_time=sim.now + 1)
    opened = [
        e
        for e in b.events
        if isinstance(e, CircuitStreamEvent) and isinstance(e.event, StreamOpened)
    ]
    assert len(opened) == 1
    end_cid = opened[0].circuit_id
    with pytest.raises(LocalProtocolError):
        b.node.streams.open(end_cid, "x", sim.now)
    sim.call(b, lambda: b.node.streams.accept(end_cid, sid, sim.now))
    sim.call(b, lambda: b.node.streams.reset(end_cid, sid, 1, sim.now))
