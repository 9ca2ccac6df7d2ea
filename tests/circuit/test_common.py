"""What the relay table and the builder share: sealing frames into a cell and queueing it."""

import pytest

from zmesh.circuit.common import send_frames
from zmesh.identity import Identity
from zmesh.link import frames as lf
from zmesh.link.connection import (
    LINK_WINDOW,
    MAX_QUEUED_CELLS,
    LinkConnection,
    LinkLimits,
    LinkWatch,
)
from zmesh.link.handshake import LinkHandshake
from zmesh.onion import sphinx
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import ClientEnd, ServerEnd
from zmesh.session.frames import DataFrame, LinkFrame, OpenFrame, PingFrame, StreamFrame

G = DEFAULT_GEOMETRY
FRAMES: list[StreamFrame] = [LinkFrame(b"t" * 16, 0), OpenFrame(1, "example.org:80"), PingFrame(7)]


def _ends() -> tuple[ClientEnd, ServerEnd]:
    keys = sphinx.derive_hop_keys(G, DeterministicRng(1).bytes(32))
    return ClientEnd(G, [keys]), ServerEnd(G, keys)


def _conn() -> LinkConnection:
    rng = DeterministicRng(2)
    me, peer = Identity.generate(rng), Identity.generate(rng)
    hs = LinkHandshake(me, initiator=False, binding=b"b" * 32, rng=rng)
    conn = LinkConnection(1, hs, G, 0.0, limits=LinkLimits(), watch=LinkWatch())
    conn.up, conn.peer_id = True, peer.node_id
    return conn


def test_send_frames_queues_one_sealed_cell_the_other_end_opens() -> None:
    client, server = _ends()
    conn = _conn()
    assert send_frames(client, conn, 9, FRAMES, 0.0)
    assert send_frames(client, conn, 9, [DataFrame(1, 0, b"x" * 100)], 0.0)
    out = [f for d in conn.datagrams_to_send() for f in lf.FrameDecoder(G).feed(d)]
    assert [type(f) for f in out] == [lf.Cell, lf.Cell]
    assert all(isinstance(f, lf.Cell) and f.circ_id == 9 for f in out)
    cells = [f.cell for f in out if isinstance(f, lf.Cell)]
    assert server.open_frames(cells[0]) == FRAMES
    assert server.open_frames(cells[1]) == [DataFrame(1, 0, b"x" * 100)]
    assert client.send_counter == server.recv_counter == 2


def test_send_frames_reports_a_full_circuit_queue() -> None:
    """With no credit, a circuit may queue MAX_QUEUED_CELLS cells; the next is refused
    (the caller then destroys the circuit)."""
    client, _ = _ends()
    conn = _conn()
    for _ in range(LINK_WINDOW):
        conn.send(lf.Padding(0), 0.0)
    assert conn.credit == 0
    for _ in range(MAX_QUEUED_CELLS):
        assert send_frames(client, conn, 9, [PingFrame(1)], 0.0)
    assert not send_frames(client, conn, 9, [PingFrame(1)], 0.0)
    assert send_frames(client, conn, 11, [PingFrame(1)], 0.0)  # another circuit still may


def test_send_frames_without_a_link_sends_nothing_and_fails_nothing() -> None:
    client, _ = _ends()
    assert send_frames(client, None, 5, FRAMES, 0.0)
    assert client.send_counter == 0  # nothing was sealed


def test_frames_larger_than_a_cell_are_a_local_bug() -> None:
    client, _ = _ends()
    with pytest.raises(ValueError):
        send_frames(client, _conn(), 9, [DataFrame(1, 0, bytes(G.cell_payload_size))], 0.0)
    assert client.send_counter == 0
