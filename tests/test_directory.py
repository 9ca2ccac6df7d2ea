"""Directory: gossip that is paced, de-duplicated before verification, budgeted per peer,
bounded and expiring; each attack driven against a real node by a scripted peer."""

import dataclasses
from collections.abc import Iterator

import pytest
from peer import RawPeer, quick_identity

from zmesh.directory import (
    GOSSIP_BURST,
    GOSSIP_RATE,
    MIN_UPDATE_INTERVAL,
    VERIFY_SLACK,
    DescriptorLearned,
    Directory,
)
from zmesh.identity import Descriptor, Flags, Identity
from zmesh.link import frames as lf
from zmesh.link.table import LinkTable
from zmesh.node import Node
from zmesh.rng import DeterministicRng

NOW = 1000.0


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """Counts signature checks (the expensive step) by node id."""
    calls: list[bytes] = []
    real = Descriptor.verify

    def verify(self: Descriptor, now: float) -> None:
        calls.append(self.node_id)
        real(self, now)

    monkeypatch.setattr(Descriptor, "verify", verify)
    yield calls


def _node(seed: int = 5) -> Node:
    rng = DeterministicRng(seed)
    return Node(Identity.generate(rng), rng, NOW)


def _relay(i: int, published: int = int(NOW), lifetime: int = 3600) -> Descriptor:
    return quick_identity(i, b"relay").make_descriptor(
        flags=Flags.RELAY,
        onion_epoch=0,
        onion_pk=bytes(1216),
        published=published,
        lifetime=lifetime,
    )


def _learned(node: Node) -> list[bytes]:
    out = []
    while (e := node.next_event()) is not None:
        if isinstance(e, DescriptorLearned):
            out.append(e.descriptor.node_id)
    return out


def test_a_descriptor_sent_again_is_not_verified_again(verifications: list[bytes]) -> None:
    node = _node()
    peer = RawPeer(node, 1, NOW)
    frame = lf.DescriptorFrame(peer.descriptor(NOW).encode())
    for _ in range(1000):
        peer.send(frame, NOW)
    assert verifications == [peer.node_id]
    assert peer.node_id in node.directory


def test_bad_signatures_beyond_the_budget_are_not_verified(verifications: list[bytes]) -> None:
    """Before: every one of these cost a 240 µs signature check."""
    node = _node()
    hostile = RawPeer(node, 1, NOW)
    honest = RawPeer(node, 2, NOW, seed=3)
    template = hostile.descriptor(NOW)
    rng = DeterministicRng(4)
    for _ in range(1000):  # each with a fresh node id, so none is a duplicate
        forged = dataclasses.replace(template, identity_kem_pk=rng.bytes(1216))
        hostile.send(lf.DescriptorFrame(forged.encode()), NOW)
    assert len(verifications) == GOSSIP_BURST * VERIFY_SLACK
    assert len(node.directory) == 0 and not hostile.closed()
    honest.send(lf.DescriptorFrame(honest.descriptor(NOW).encode()), NOW)
    assert honest.node_id in node.directory  # its own budget is untouched


def test_a_re_signed_copy_is_taken_and_flooded_at_most_once_per_interval() -> None:
    node = _node()
    peer = RawPeer(node, 1, NOW)
    other = RawPeer(node, 2, NOW, seed=3)
    other.read_all(NOW)
    _learned(node)
    t = NOW
    for published in range(int(NOW), int(NOW) + 50):  # published + 1, again and again
        t += 0.2
        peer.send(lf.DescriptorFrame(peer.descriptor(t, published=published).encode()), t)
        node.handle_timer(t)
    assert _learned(node) == [peer.node_id]
    flooded = [f for f in other.read_all(t) if isinstance(f, lf.DescriptorFrame)]
    assert len(flooded) == 1
    t += MIN_UPDATE_INTERVAL
    peer.send(lf.DescriptorFrame(peer.descriptor(t, published=int(t)).encode()), t)
    assert _learned(node) == [peer.node_id]  # a real update, later, still gets through


def test_link_up_paces_the_directory_exchange() -> None:
    node = _node()
    for i in range(500):
        node.learn_descriptor(_relay(i), NOW)
    peer = RawPeer(node, 1, NOW)
    got = sum(isinstance(f, lf.DescriptorFrame) for f in peer.read_all(NOW))
    assert got == GOSSIP_BURST  # not the whole directory at once
    t = NOW
    while got < 501:
        t = node.get_timer()
        assert t <= NOW + 10, "the exchange stalled"
        node.handle_timer(t)
        got += sum(isinstance(f, lf.DescriptorFrame) for f in peer.read_all(t))
        peer.send(lf.Padding(0), t)  # stays alive
    assert t - NOW == pytest.approx((501 - GOSSIP_BURST) / GOSSIP_RATE, abs=0.05)


def test_expired_descriptors_are_removed() -> None:
    node = _node()
    node.learn_descriptor(_relay(1, lifetime=100), NOW)
    node.learn_descriptor(_relay(2), NOW)
    assert len(node.directory) == 2
    node.handle_timer(NOW + 160)
    assert [d.node_id for d in node.directory.values()] == [_relay(2).node_id]


def test_the_directory_is_bounded() -> None:
    directory = Directory(b"\x00" * 32, LinkTable(), NOW, max_entries=3)
    for i in range(5):
        directory.add(_relay(i), NOW)
    assert len(directory) == 3
    assert _relay(4).node_id not in directory  # a full table sheds the newest
    newer = _relay(0, published=int(NOW) + 1)
    directory.add(newer, NOW)  # known nodes still update
    assert directory[newer.node_id].published == newer.published


def test_garbage_and_expired_descriptors_are_dropped_without_closing_the_link() -> None:
    node = _node()
    peer = RawPeer(node, 1, NOW)
    peer.send(lf.DescriptorFrame(b"\x00" * 100), NOW)
    peer.send(lf.DescriptorFrame(_relay(7, published=0, lifetime=10).encode()), NOW)
    assert not peer.closed() and len(node.directory) == 0
