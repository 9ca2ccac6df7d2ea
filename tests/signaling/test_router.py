"""SignalRouter: routes to nodes we have no link to, bounded against forged origins."""

from peer import RawPeer

from zmesh.identity import Identity
from zmesh.link import frames as lf
from zmesh.node import Node, SignalReceived
from zmesh.rng import DeterministicRng
from zmesh.signaling.router import MAX_RETURN_ROUTES, RELAY_BURST, RELAY_RATE, SIGNAL_TTL

NOW = 1000.0


def _node() -> Node:
    rng = DeterministicRng(11)
    return Node(Identity.generate(rng), rng, NOW)


def _signals(node: Node) -> list[SignalReceived]:
    out = []
    while (e := node.next_event()) is not None:
        if isinstance(e, SignalReceived):
            out.append(e)
    return out


def test_forged_origins_cannot_grow_the_return_routes() -> None:
    """Before: each forged origin added an entry to the return-route table, for good."""
    node = _node()
    hostile = RawPeer(node, 1, NOW)
    honest = RawPeer(node, 2, NOW, seed=3)
    rng = DeterministicRng(4)
    origin = rng.bytes(32)  # reached through the honest neighbour, before the flood
    honest.send(lf.Signal(origin, node.node_id, SIGNAL_TTL, b"offer"), NOW)
    assert _signals(node) == [SignalReceived(origin, b"offer")]
    t = NOW
    for _ in range(3 * MAX_RETURN_ROUTES):  # paced to the budget, so each one counts
        t += 2 / RELAY_RATE
        hostile.send(lf.Signal(rng.bytes(32), node.node_id, SIGNAL_TTL, b"offer"), t)
        hostile.send(lf.Signal(origin, node.node_id, SIGNAL_TTL, b"forged"), t)
        hostile.read_all(t)
    assert len(node.signals) == MAX_RETURN_ROUTES
    assert not hostile.closed()
    # the forged copies of `origin` did not take its route over: the answer goes back
    # through the honest neighbour
    assert node.send_signal(origin, b"answer", t)
    answer = [f for f in honest.read_all(t) if isinstance(f, lf.Signal)]
    assert answer == [lf.Signal(node.node_id, origin, SIGNAL_TTL, b"answer")]


def test_relaying_is_budgeted_per_link_and_ttl_bounded() -> None:
    node = _node()
    hostile = RawPeer(node, 1, NOW)
    target = RawPeer(node, 2, NOW, seed=3)
    target.read_all(NOW)
    for _ in range(1000):
        hostile.send(lf.Signal(b"\x01" * 32, target.node_id, SIGNAL_TTL, b"x"), NOW)
        hostile.read_all(NOW)
    relayed = [f for f in target.read_all(NOW) if isinstance(f, lf.Signal)]
    assert len(relayed) == RELAY_BURST
    assert all(f.ttl == SIGNAL_TTL - 1 for f in relayed)
    hostile.send(lf.Signal(b"\x01" * 32, target.node_id, 0, b"x"), NOW + 10)  # TTL spent
    assert not [f for f in target.read_all(NOW + 10) if isinstance(f, lf.Signal)]


def test_no_route_and_oversized_payloads() -> None:
    node = _node()
    assert not node.send_signal(b"\x42" * 32, b"x", NOW)
    try:
        node.send_signal(b"\x42" * 32, bytes(lf.MAX_SIGNAL_PAYLOAD + 1), NOW)
    except Exception as exc:
        assert "too large" in str(exc)
    else:
        raise AssertionError("an oversized payload was accepted")
