"""The helpers the relay table and the builder share: opening cells and pumping streams."""

from collections import deque

from zmesh.circuit.common import CircuitEvent, CircuitStreamEvent, open_cell, pump
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import ClientEnd, ServerEnd, StreamOpened
from zmesh.session.frames import OpenFrame, encode_stream_frames

G = DEFAULT_GEOMETRY


def _ends() -> tuple[ClientEnd, ServerEnd]:
    keys = sphinx.derive_hop_keys(G, DeterministicRng(1).bytes(32))
    return ClientEnd(G, [keys]), ServerEnd(G, keys)


def test_open_cell_turns_stream_frames_into_events() -> None:
    client, server = _ends()
    client.open_stream(1, "example.org:80")
    events: deque[CircuitEvent] = deque()
    for data in client.cells_to_send():
        assert open_cell(server, 7, data, events)
    assert list(events) == [CircuitStreamEvent(7, StreamOpened(1, "example.org:80"))]


def test_a_garbled_cell_is_reported_not_raised() -> None:
    client, server = _ends()
    payload = encode_stream_frames([OpenFrame(1, "x")], G.cell_payload_size)
    sealed = bytearray(cell.client_seal(G, client.hops, 0, payload))
    sealed[100] ^= 1
    events: deque[CircuitEvent] = deque()
    assert not open_cell(server, 7, bytes(sealed), events)
    assert not events


def test_pump_without_a_link_sends_nothing_and_fails_nothing() -> None:
    client, _ = _ends()
    client.open_stream(1, "x")
    assert pump(client, None, 5, 0.0)
