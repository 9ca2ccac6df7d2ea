"""drain: the one step every driver takes after an input."""

from mesh import full_mesh

from zmesh.driver import drain
from zmesh.link import frames as lf
from zmesh.node import Event, LinkUp


def test_drain_sends_in_order_delivers_events_and_returns_the_timer() -> None:
    sim = full_mesh(2)
    a, b = sim.nodes
    link = a.node.link_to(b.node.node_id)
    assert link is not None
    a.node.send_signal(b.node.node_id, b"one", sim.now)
    a.node.send_signal(b.node.node_id, b"two", sim.now)
    sent: list[tuple[int, bytes]] = []
    events: list[Event] = []
    deadline = drain(a.node, sim.now, lambda lid, data: sent.append((lid, data)), events.append)
    assert [lid for lid, _ in sent] == [link]  # both frames in one message (D56)
    frames = lf.FrameDecoder(a.node.geometry).feed_message(sent[0][1])
    assert [f.payload for f in frames if isinstance(f, lf.Signal)] == [b"one", b"two"]
    assert deadline == a.node.get_timer() > sim.now
    assert drain(a.node, sim.now, lambda *_: None, events.append) == deadline
    assert not [e for e in events if isinstance(e, LinkUp)]
