"""LinkConnection: credit, bounded backlogs, credit starvation, circuit-id bookkeeping; and
the attacks on them, driven against a real Node by a scripted peer."""

import pytest
from peer import RawPeer, quick_identity

from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.identity import Flags, Identity
from zmesh.link import connection as lc
from zmesh.link import frames as lf
from zmesh.link.connection import (
    LINK_WINDOW,
    MAX_CIRCUITS_PER_DIRECTION,
    MAX_CLOSED_IDS,
    MAX_CONTROL_BACKLOG,
    MAX_QUEUED_CELLS,
    PONGS_PER_INTERVAL,
    LinkConnection,
    LinkLimits,
    LinkWatch,
)
from zmesh.link.handshake import LinkHandshake
from zmesh.link.table import MAX_HANDSHAKING
from zmesh.node import LinkClosed, Node, NodeConfig
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.rng import DeterministicRng

_PEER = 0x80000000  # the top bit: ids a responder's peer (the initiator) allocates


def _conn(initiator: bool = False, now: float = 0.0) -> LinkConnection:
    rng = DeterministicRng(1)
    me, peer = Identity.generate(rng), Identity.generate(rng)
    hs = LinkHandshake(
        me,
        initiator=initiator,
        binding=b"b" * 32,
        rng=rng,
        expected_peer_kem_pk=peer.kem.public if initiator else None,
        expected_peer_id=peer.node_id if initiator else None,
    )
    conn = LinkConnection(1, hs, DEFAULT_GEOMETRY, now, limits=LinkLimits(), watch=LinkWatch())
    conn.up, conn.peer_id = True, peer.node_id
    return conn


def _sent(conn: LinkConnection) -> list[lf.Frame]:
    """The frames ``conn`` has ready to send, decoded message by message."""
    decoder = lf.FrameDecoder(DEFAULT_GEOMETRY)
    return [f for message in conn.datagrams_to_send() for f in decoder.feed_message(message)]


def _starve(conn: LinkConnection) -> None:
    for _ in range(LINK_WINDOW):
        conn.send(lf.Padding(0), 0.0)
    assert conn.credit == 0 and conn.backlog == 0


def test_credit_is_returned_after_half_a_window() -> None:
    conn = _conn()
    for _ in range(LINK_WINDOW // 2 - 1):
        assert conn.admit(lf.Padding(0))
    conn.processed_frames(LINK_WINDOW // 2 - 1)
    assert conn.datagrams_to_send() == []
    assert conn.admit(lf.Padding(0))
    conn.processed_frames(1)
    assert conn.datagrams_to_send() == [lf.encode_frame(lf.Credit(LINK_WINDOW // 2))]
    assert not conn.admit(lf.Credit(1))  # uncounted frames cost no allowance


def test_a_peer_overrunning_the_window_is_refused() -> None:
    conn = _conn()
    for _ in range(LINK_WINDOW):
        conn.admit(lf.Padding(0))
    with pytest.raises(RemoteProtocolError) as err:
        conn.admit(lf.Padding(0))
    assert err.value.code is CloseCode.RESOURCE


@pytest.mark.parametrize("extra", [1, LINK_WINDOW])
def test_credit_beyond_the_window_is_refused(extra: int) -> None:
    conn = _conn()
    conn.send(lf.Padding(0), 0.0)
    conn.receive_credit(1, 0.0)  # back to a full window
    with pytest.raises(RemoteProtocolError):
        conn.receive_credit(extra, 0.0)


_SIGNAL = lf.Signal(b"a" * 32, b"b" * 32, 1, b"x")


def test_control_backlog_is_bounded_and_starvation_fails_the_link() -> None:
    conn = _conn()
    _starve(conn)
    for _ in range(MAX_CONTROL_BACKLOG):
        conn.send(_SIGNAL, 0.0)
    assert conn.backlog == MAX_CONTROL_BACKLOG and conn.failure is None
    conn.send(_SIGNAL, 0.0)
    assert conn.backlog == MAX_CONTROL_BACKLOG  # nothing more is held
    assert conn.failure == ("peer holds our link credit", CloseCode.RESOURCE)


def test_circuit_frames_do_not_count_against_the_control_backlog() -> None:
    """Tearing down thousands of circuits at once queues a DESTROY each: bounded by the
    circuit ids, never a reason to close the link."""
    conn = _conn()
    _starve(conn)
    for circ_id in range(3 * MAX_CONTROL_BACKLOG):
        conn.send(lf.Destroy(circ_id, CloseCode.NONE), 0.0)
    assert conn.failure is None and conn.backlog == 3 * MAX_CONTROL_BACKLOG


def test_the_whole_backlog_is_bounded_in_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lc, "MAX_BACKLOG_BYTES", 10 * 8200)
    conn = _conn()
    _starve(conn)
    cell = bytes(DEFAULT_GEOMETRY.cell_size)
    sent = [conn.send_cell(_PEER | i, cell, 0.0) for i in range(12)]  # 12 circuits
    assert sent == [True] * 10 + [False] * 2


def test_a_circuit_with_too_many_queued_cells_is_refused_more() -> None:
    conn = _conn()
    _starve(conn)
    cell = bytes(DEFAULT_GEOMETRY.cell_size)
    conn.add_inbound(_PEER | 9, "relay")
    assert all(conn.send_cell(_PEER | 9, cell, 0.0) for _ in range(MAX_QUEUED_CELLS))
    assert not conn.send_cell(_PEER | 9, cell, 0.0)
    assert conn.send_cell(_PEER | 10, cell, 0.0)  # another circuit is not affected
    conn.release(_PEER | 9)  # closing the circuit: its queued cells are never sent
    conn.datagrams_to_send()
    conn.receive_credit(LINK_WINDOW, 0.0)
    assert [f.circ_id for f in _sent(conn) if type(f) is lf.Cell] == [_PEER | 10]
    assert conn.backlog == 0


def test_credit_drains_the_backlog_in_order() -> None:
    conn = _conn()
    _starve(conn)
    conn.datagrams_to_send()
    conn.send_cell(3, b"a" * DEFAULT_GEOMETRY.cell_size, 0.0)
    conn.send(lf.Destroy(4, CloseCode.NONE), 0.0)
    conn.receive_credit(2, 1.0)
    assert [type(f) for f in _sent(conn)] == [lf.Cell, lf.Destroy]
    health = conn.health
    assert conn.get_timer() == min(health.next_ping, health.dead_at(conn.last_rx))  # no stall


def test_trickled_credit_does_not_reset_the_stall_clock() -> None:
    """CREDIT(0) or CREDIT(1) now and then kept a starving peer's link open for good."""
    conn = _conn()
    _starve(conn)
    for _ in range(100):
        conn.send(_SIGNAL, 10.0)
    limits = LinkLimits()
    for t in range(11, 45):
        conn.receive_credit(0 if t % 2 else 1, float(t))
        conn.last_rx = float(t)
        conn.handle_timer(float(t))
    assert conn.failure == ("peer held our credit too long", CloseCode.RESOURCE)
    assert conn.get_timer() <= 10.0 + limits.credit_timeout + 2


def test_a_peer_holding_credit_too_long_loses_the_link() -> None:
    conn = _conn()
    _starve(conn)
    conn.send(lf.Padding(0), 10.0)  # waits for credit from t=10
    limits = LinkLimits()
    conn.last_rx = 10.0 + limits.credit_timeout  # the peer is alive, just holding credit
    assert conn.get_timer() <= 10.0 + limits.credit_timeout
    conn.handle_timer(10.0 + limits.credit_timeout)
    assert conn.failure == ("peer held our credit too long", CloseCode.RESOURCE)


def test_timers_ping_silence_and_handshake() -> None:
    conn = _conn()
    conn.start(0.0)  # link up: the first PING a keepalive later, then one per keepalive
    assert conn.datagrams_to_send() == [] and conn.get_timer() == 1.0
    conn.handle_timer(1.0)
    assert conn.datagrams_to_send() == [lf.encode_frame(lf.Ping(0))]
    conn.handle_timer(2.0)
    assert conn.datagrams_to_send() == [lf.encode_frame(lf.Ping(1))]
    dead = conn.health.dead_at(conn.last_rx)  # no PONG since link up: phi crosses 8
    assert 3.0 < dead < 3.5  # about 3 keepalives on
    conn.handle_timer(3.0)
    assert conn.failure is None and conn.datagrams_to_send() == [lf.encode_frame(lf.Ping(2))]
    assert conn.get_timer() == dead
    conn.handle_timer(dead)
    assert conn.failure == ("peer silent", CloseCode.TIMEOUT)
    assert conn.phi(dead) >= 8.0 - 1e-6
    fresh = _conn()
    fresh.up = False
    assert fresh.get_timer() == lc.HANDSHAKE_TIMEOUT
    fresh.handle_timer(lc.HANDSHAKE_TIMEOUT)
    assert fresh.failure is not None and fresh.failure[1] is CloseCode.TIMEOUT


def _pongs(conn: LinkConnection, pings: int, now: float) -> int:
    for seq in range(pings):
        conn.on_ping(lf.Ping(seq), now)
    return sum(1 for f in _sent(conn) if type(f) is lf.Pong)


def test_a_peers_pings_are_answered_within_the_budget() -> None:
    conn = _conn()
    assert _pongs(conn, 100, 5.0) == PONGS_PER_INTERVAL  # a burst
    assert conn.pongs_refused == 100 - PONGS_PER_INTERVAL
    interval = conn.limits.keepalive / PONGS_PER_INTERVAL
    assert _pongs(conn, 1, 5.0 + interval / 2) == 0
    assert _pongs(conn, 1, 5.0 + interval) == 1  # refills at 4 per keepalive
    conn.on_ping(lf.Ping(0xDEADBEEF), 100.0)
    assert conn.datagrams_to_send() == [lf.encode_frame(lf.Pong(0xDEADBEEF))]  # the same seq


def test_a_ping_flood_gets_at_most_4_pongs_per_keepalive() -> None:
    """The attack: 1,000 PINGs a second for 60 s.  We answer 4 per keepalive (plus the
    first burst), not 60,000; an honest peer (one PING per keepalive, or even two) always
    gets its answer."""
    conn = _conn()
    answered = sum(_pongs(conn, 1, i / 1000) for i in range(60_000))
    assert PONGS_PER_INTERVAL * 60 - 1 <= answered <= PONGS_PER_INTERVAL * 61
    assert conn.pongs_refused == 60_000 - answered
    honest = _conn()
    assert all(_pongs(honest, 1, i * 0.5) == 1 for i in range(2000))
    assert honest.pongs_refused == 0


def test_circuit_ids_are_capped_in_each_direction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lc, "MAX_CIRCUITS_PER_DIRECTION", 4)
    conn = _conn(initiator=True)  # our ids have the top bit set, the peer's do not
    rng = DeterministicRng(2)
    assert all(conn.add_inbound(i, "relay") for i in range(1, 5))
    assert not conn.add_inbound(5, "relay")
    ours = [conn.allocate(rng, "client") for _ in range(4)]
    assert all(i is not None and i & 0x80000000 for i in ours)
    assert conn.allocate(rng, "client") is None
    conn.release(1)
    assert conn.add_inbound(5, "relay")  # a freed slot is usable again
    conn.release(ours[0] or 0)
    assert conn.allocate(rng, "client") is not None


def test_ids_from_our_half_and_ids_in_use_are_protocol_errors() -> None:
    conn = _conn(initiator=True)
    with pytest.raises(RemoteProtocolError):
        conn.add_inbound(0x80000001, "relay")
    conn.add_inbound(7, "relay")
    with pytest.raises(RemoteProtocolError):
        conn.add_inbound(7, "relay")


def test_closed_ids_are_remembered_and_bounded() -> None:
    conn = _conn()
    for circ_id in range(1, MAX_CLOSED_IDS + 11):
        conn.add_inbound(_PEER | circ_id, "relay")
        conn.release(_PEER | circ_id)
    assert conn.circuit_state(_PEER | (MAX_CLOSED_IDS + 10)) == "closed"
    assert conn.circuit_state(_PEER | 1) is None  # the oldest were forgotten
    assert len(conn._closed) == MAX_CLOSED_IDS
    conn.reject(_PEER | 1)
    assert conn.circuit_state(_PEER | 1) == "closed"
    assert conn.circuit_state(0x7FFFFFFF) is None


def test_default_caps() -> None:
    assert MAX_CIRCUITS_PER_DIRECTION == 4096 and MAX_CONTROL_BACKLOG == 1024


# -- attacks on a real node ---------------------------------------------------------------


def _directory_node(entries: int) -> tuple[Node, float]:
    rng = DeterministicRng(5)
    now = 1000.0
    node = Node(Identity.generate(rng), rng, now)
    for i in range(entries):
        other = quick_identity(i, b"dir")
        desc = other.make_descriptor(
            flags=Flags.RELAY,
            onion_epoch=0,
            onion_pk=bytes(1216),
            published=int(now),
            lifetime=3600,
        )
        node.learn_descriptor(desc, now)
    assert len(node.directory) == entries
    return node, now


def _held_bytes(node: Node, link_id: int) -> int:
    conn = node._links.get(link_id)
    return 0 if conn is None else sum(len(entry[0]) for entry in conn._backlog)


@pytest.mark.slow
def test_a_peer_that_never_returns_credit_costs_bounded_memory_and_loses_its_link() -> None:
    """Before: link-up queued the whole directory behind the credit (about 60 MiB per link
    at 10,000 entries) and kept it for as long as the peer held credit."""
    node, now = _directory_node(600)
    hostile = RawPeer(node, 1, now)
    honest = RawPeer(node, 2, now, seed=7)
    most, t = 0, now
    learned: set[bytes] = set()
    while (not hostile.closed() or len(learned) < 601) and t < now + 400:
        t += 1.0
        hostile.send(lf.Padding(0), t)  # alive, but never a CREDIT (dropped once closed)
        honest.send(lf.Padding(0), t)
        node.handle_timer(t)
        hostile.read(t)
        got = honest.read(t)
        learned |= {
            lf.DescriptorFrame(f.data).data for f in got if isinstance(f, lf.DescriptorFrame)
        }
        if n := sum(1 for f in got if type(f) not in lc.UNCOUNTED):
            honest.send(lf.Credit(n), t)  # the honest peer returns credit as it reads
        most = max(most, _held_bytes(node, 1))
    assert hostile.closed()
    closes = [f for f in hostile.inbox if isinstance(f, lf.Close)]
    assert closes and closes[-1].code is CloseCode.RESOURCE
    assert most < 64 * 1024  # keepalives only: descriptors wait as ids, not bytes
    sent = sum(1 for f in hostile.inbox if isinstance(f, lf.DescriptorFrame))
    assert sent <= LINK_WINDOW  # never more than its credit allowed
    # the honest neighbour got the whole directory (and our descriptor) meanwhile
    assert len(learned) == 601
    assert not honest.closed()


def test_inbound_links_are_capped() -> None:
    rng = DeterministicRng(8)
    node = Node(Identity.generate(rng), rng, 0.0, NodeConfig(max_inbound_links=3))
    peers = [RawPeer(node, i, 0.0, seed=i) for i in range(1, 4)]
    node.open_link(4, 0.0, binding=b"x" * 32)
    events = []
    while (e := node.next_event()) is not None:
        events.append(e)
    assert LinkClosed(4, None, CloseCode.RESOURCE) in events
    assert all(not p.closed() for p in peers)
    node.link_closed(1, 0.0)  # one goes: there is room again
    assert not RawPeer(node, 5, 0.0, seed=5).closed()


def test_half_open_links_cannot_crowd_out_new_peers() -> None:
    rng = DeterministicRng(8)
    node = Node(Identity.generate(rng), rng, 0.0)
    for link_id in range(100, 100 + 2 * MAX_HANDSHAKING):  # never say HELLO1
        node.open_link(link_id, 0.0, binding=b"x" * 32)
    assert sum(1 for c in node._links if not c.up) == MAX_HANDSHAKING
    assert not RawPeer(node, 1, 0.0).closed()  # a real peer still gets in


def test_descriptors_are_still_learned_with_gossip_off() -> None:
    rng = DeterministicRng(8)
    node = Node(Identity.generate(rng), rng, 0.0, NodeConfig(gossip=False))
    peer = RawPeer(node, 1, 0.0)
    peer.send(lf.DescriptorFrame(peer.descriptor(0.0).encode()), 0.0)
    assert peer.node_id in node.directory
    assert not [f for f in peer.read_all(0.0) if isinstance(f, lf.DescriptorFrame)]
