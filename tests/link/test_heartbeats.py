"""Link heartbeats end to end: a Node against a scripted peer that answers PINGs (or not),
sends data (or not) and holds its PONGs back; the PING flood; real nodes in the simulator."""

import math
from dataclasses import dataclass, field

import pytest
from mesh import events_of, full_mesh
from peer import RawPeer

from zmesh.errors import CloseCode
from zmesh.health.link import PHI_THRESHOLD
from zmesh.identity import Identity
from zmesh.link import frames as lf
from zmesh.link.connection import PONGS_PER_INTERVAL
from zmesh.node import LinkClosed, Node, NodeConfig
from zmesh.rng import DeterministicRng

RTT = 0.05


@dataclass
class ScriptedPeer:
    """A peer on virtual time: answers the node's PINGs after :data:`RTT` while
    ``answering``, holds the PONGs until ``hold_until``, and sends a PADDING every
    ``data_every`` seconds while ``sending``."""

    node: Node
    raw: RawPeer
    now: float = 0.0
    answering: bool = True
    hold_until: float = 0.0
    sending: bool = False
    data_every: float = 0.1
    pending: list[tuple[float, lf.Frame]] = field(default_factory=list)
    next_data: float = 0.0

    def run(self, until: float) -> None:
        """Advance to ``until`` (or until the link closes), one event at a time."""
        self.next_data = max(self.next_data, self.now)
        for _ in range(1_000_000):
            if self.raw.closed():
                return
            for frame in self.raw.read(self.now):  # what the node sent at self.now
                if isinstance(frame, lf.Ping) and self.answering:
                    due = max(self.now + RTT, self.hold_until)
                    self.pending.append((due, lf.Pong(frame.seq)))
            self.pending.sort(key=lambda p: p[0])
            times = [until, self.node.get_timer()]
            if self.pending:
                times.append(self.pending[0][0])
            if self.sending:
                times.append(self.next_data)
            t = min(times)
            if t >= until:
                self.now = until
                return
            assert t >= self.now, "a timer in the past"
            self.now = t
            while self.pending and self.pending[0][0] <= t:
                self.raw.send(self.pending.pop(0)[1], t)
            if self.sending and self.next_data <= t:
                self.raw.send(lf.Padding(0), t)
                self.next_data = t + self.data_every
            self.node.handle_timer(t)
        raise AssertionError("the node's timer does not advance")

    def health(self) -> tuple[float | None, float, float]:
        (status,) = self.node.link_health(self.now)
        assert status.peer_id == self.raw.node_id
        return status.rtt, status.loss, status.phi


def scripted() -> ScriptedPeer:
    rng = DeterministicRng(5)
    node = Node(Identity.generate(rng), rng, 0.0, NodeConfig(gossip=False))
    return ScriptedPeer(node, RawPeer(node, 1, 0.0))


def closed_at(peer: ScriptedPeer) -> tuple[float, CloseCode]:
    peer.raw.read(peer.now)
    closes = [f for f in peer.raw.inbox if isinstance(f, lf.Close)]
    assert len(closes) == 1
    return peer.now, closes[0].code


def test_a_steady_link_measures_rtt_and_a_silent_peer_is_dropped_by_phi() -> None:
    peer = scripted()
    peer.run(30.0)
    rtt, loss, phi = peer.health()
    assert rtt == pytest.approx(RTT) and loss == 0.0 and phi < 1.0
    assert peer.node.link_health(30.0)[0].age == 30.0
    peer.answering = False  # SIGSTOP: nothing more from the peer
    peer.run(60.0)
    assert peer.raw.closed()
    when, code = closed_at(peer)
    assert code is CloseCode.TIMEOUT
    limit = peer.node.config.link_timeout
    assert 2.0 <= when - 30.0 <= 3.2 < limit  # as the fixed 3 s rule found it, not the cap


def test_a_busy_link_whose_pongs_wait_behind_data_is_kept() -> None:
    peer = scripted()
    peer.sending = True
    peer.run(10.0)
    peer.hold_until = 20.0  # PONGs queue behind data in the transport for 10 s
    peer.run(18.0)
    _, _, phi = peer.health()
    assert phi > PHI_THRESHOLD and not peer.raw.closed()  # data keeps arriving
    peer.run(25.0)
    rtt, loss, phi = peer.health()
    assert phi < 1.0 and rtt is not None and rtt > 1.0  # the PONGs came: late, measured
    assert 0.0 < loss < 1.0
    peer.answering = False  # PONGs never again, data still flows: kept past the hard cap
    peer.run(45.0)
    assert not peer.raw.closed()
    assert peer.health()[2] > PHI_THRESHOLD
    peer.sending = False  # and now nothing at all: dead a keepalive after the last byte
    peer.run(60.0)
    when, code = closed_at(peer)
    assert code is CloseCode.TIMEOUT
    assert 45.0 + peer.node.config.keepalive - 0.1 <= when <= 45.0 + peer.node.config.keepalive


def test_a_hard_cap_shorter_than_phi_needs_closes_a_silent_link_first() -> None:
    """Not reachable with the defaults (phi is faster); with a short cap the cap decides."""
    rng = DeterministicRng(6)
    config = NodeConfig(gossip=False, link_timeout=1.5)
    node = Node(Identity.generate(rng), rng, 0.0, config)
    peer = ScriptedPeer(node, RawPeer(node, 1, 0.0))
    peer.run(10.0)
    peer.answering = False
    peer.run(30.0)
    when, code = closed_at(peer)
    assert code is CloseCode.TIMEOUT and when == pytest.approx(9.0 + RTT + 1.5)


def test_a_ping_flood_gets_four_pongs_per_keepalive_and_keeps_the_link() -> None:
    peer = scripted()
    peer.run(5.0)
    peer.raw.read(5.0)
    flood = lf.encode_frame(lf.Ping(7)) * 10_000
    peer.raw.send_raw(flood, 5.0)
    pongs = [f for f in peer.raw.read(5.0) if isinstance(f, lf.Pong)]
    assert len(pongs) == PONGS_PER_INTERVAL
    assert not peer.raw.closed()
    conn = peer.node._links.get(1)
    assert conn is not None and conn.pongs_refused == 10_000 - PONGS_PER_INTERVAL
    for i in range(1, 11):  # a second later: the budget has refilled, by 4 per keepalive
        peer.raw.send_raw(flood, 5.0 + i)
        got = [f for f in peer.raw.read(5.0 + i) if isinstance(f, lf.Pong)]
        assert len(got) == PONGS_PER_INTERVAL


def test_unknown_and_repeated_pongs_are_dropped_quietly() -> None:
    peer = scripted()
    peer.run(5.0)
    conn = peer.node._links.get(1)
    assert conn is not None
    for seq in (0, 0, 3, 2**32 - 1, 999):  # answered, answered, answered, never sent (x2)
        peer.raw.send(lf.Pong(seq), 5.0)
    assert not peer.raw.closed() and conn.health.stale_pongs == 5
    assert peer.health()[0] == pytest.approx(RTT)


def test_ping_and_pong_before_the_handshake_close_the_link() -> None:
    rng = DeterministicRng(7)
    node = Node(Identity.generate(rng), rng, 0.0)
    for link_id, frame in ((1, lf.Ping(0)), (2, lf.Pong(0))):
        node.open_link(link_id, 0.0, binding=b"x" * 32)
        node.receive(link_id, lf.encode_frame(frame), 0.0)
    events = []
    while (event := node.next_event()) is not None:
        events.append(event)
    assert LinkClosed(1, None, CloseCode.HANDSHAKE) in events
    assert LinkClosed(2, None, CloseCode.HANDSHAKE) in events


def test_real_nodes_report_each_links_rtt_loss_and_phi() -> None:
    sim = full_mesh(3)
    sim.run(max_time=sim.now + 20)
    a = sim.nodes[0]
    report = sim.call(a, lambda: a.node.link_health(sim.now))
    assert sorted(s.peer_id for s in report) == sorted(n.node.node_id for n in sim.nodes[1:])
    for status in report:
        assert status.rtt is not None and status.rtt == pytest.approx(
            2 * sim.model.latency, rel=0.5
        )
        assert status.loss == 0.0 and 0.0 <= status.phi < 1.0 and status.age > 15
        assert math.isfinite(status.phi)
    assert not any(events_of(n, LinkClosed) for n in sim.nodes)
