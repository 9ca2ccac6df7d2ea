"""LinkTable: links by id and by peer."""

import pytest
from peer import RawPeer

from zmesh.errors import LocalProtocolError
from zmesh.identity import Identity
from zmesh.node import Node
from zmesh.rng import DeterministicRng


def test_by_peer_falls_back_to_another_link_to_the_same_peer() -> None:
    rng = DeterministicRng(1)
    node = Node(Identity.generate(rng), rng, 0.0)
    first = RawPeer(node, 1, 0.0, seed=5)
    second = RawPeer(node, 2, 0.0, identity=first.identity)  # the same node, dialling twice
    assert first.node_id == second.node_id
    assert node.link_to(first.node_id) == 1
    node.link_closed(1, 0.0)
    assert node.link_to(first.node_id) == 2
    assert node.peers() == [first.node_id]
    with pytest.raises(LocalProtocolError):
        node.open_link(2, 0.0, binding=b"x" * 32)
