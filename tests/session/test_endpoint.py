"""Circuit ends: stream multiplexing over sealed cells (zmesh/session/endpoint.py)."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmesh.errors import LocalProtocolError, RemoteProtocolError
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import Geometry
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import (
    MAX_STREAMS,
    CircuitEnd,
    ClientEnd,
    ServerEnd,
    StreamConnected,
    StreamData,
    StreamEvent,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from zmesh.session.frames import (
    AckFrame,
    ConnectedFrame,
    DataFrame,
    OpenFrame,
    PaddingFrame,
    ResetFrame,
    StreamFrame,
)
from zmesh.session.stream import DEFAULT_WINDOW, StreamState

GEOMETRY = Geometry(cell_size=1024)  # small cells: many frames per transfer


def hop_keys(n: int, seed: int = 1) -> list[sphinx.HopKeys]:
    rng = DeterministicRng(seed, b"endpoint")
    return [sphinx.derive_hop_keys(GEOMETRY, rng.bytes(32)) for _ in range(n)]


class Circuit:
    """A client end and a server end joined through ``len(hops) - 1`` relays."""

    def __init__(self, hops: int = 3, window: int = DEFAULT_WINDOW) -> None:
        self.hops = hop_keys(hops)
        self.client = ClientEnd(GEOMETRY, self.hops, window=window)
        self.server = ServerEnd(GEOMETRY, self.hops[-1], window=window)
        self.forward_counter = 0
        self.backward_counter = 0

    def forward(self, c: bytes) -> bytes:
        for keys in self.hops[:-1]:
            c = cell.relay_forward(GEOMETRY, keys, self.forward_counter, c)
        self.forward_counter += 1
        return c

    def backward(self, c: bytes) -> bytes:
        for keys in reversed(self.hops[:-1]):
            c = cell.relay_backward(GEOMETRY, keys, self.backward_counter, c)
        self.backward_counter += 1
        return c

    def run(self, max_rounds: int = 10_000) -> tuple[list[StreamEvent], list[StreamEvent]]:
        """Move cells both ways until both ends are idle; return (client, server) events."""
        at_client: list[StreamEvent] = []
        at_server: list[StreamEvent] = []
        for _ in range(max_rounds):
            up = self.client.cells_to_send()
            down = self.server.cells_to_send()
            if not up and not down:
                return at_client, at_server
            for c in up:
                at_server += self.server.open_cell(self.forward(c))
            for c in down:
                at_client += self.client.open_cell(self.backward(c))
        raise AssertionError("the circuit never went idle")


def data_of(events: list[StreamEvent]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for e in events:
        if isinstance(e, StreamData):
            out[e.stream_id] = out.get(e.stream_id, b"") + e.data
    return out


def of_type[T](events: list[StreamEvent], kind: type[T]) -> list[T]:
    return [e for e in events if isinstance(e, kind)]


# -- one stream, end to end --------------------------------------------------------------


@pytest.mark.parametrize("hops", [1, 3])
def test_request_response_over_the_circuit(hops: int) -> None:
    circ = Circuit(hops)
    stream = circ.client.new_stream("example.org:443")
    stream.write(b"GET / HTTP/1.0\r\n\r\n")
    stream.finish()
    at_client, at_server = circ.run()
    sid = stream.stream_id
    assert at_server[0] == StreamOpened(sid, "example.org:443")
    assert data_of(at_server) == {sid: b"GET / HTTP/1.0\r\n\r\n"}
    assert StreamFinished(sid) in at_server
    assert at_client == []  # not connected until the server says so

    circ.server.accept_stream(sid)
    reply = random.Random(1).randbytes(50_000)
    circ.server.streams[sid].write(reply)
    circ.server.streams[sid].finish()
    at_client, _ = circ.run()
    assert at_client[0] == StreamConnected(sid)
    assert data_of(at_client) == {sid: reply}
    assert at_client[-1] == StreamFinished(sid)
    assert circ.client.streams == {}  # both directions done: dropped on both ends
    assert circ.server.streams == {}
    assert circ.client.send_counter == circ.server.recv_counter
    assert circ.server.send_counter == circ.client.recv_counter


def test_many_streams_multiplexed_both_ways() -> None:
    rnd = random.Random(2)
    circ = Circuit(3, window=4096)
    up = {
        circ.client.new_stream(f"host{i}:80").stream_id: rnd.randbytes(rnd.randint(0, 30_000))
        for i in range(12)
    }
    for sid, data in up.items():
        circ.client.streams[sid].write(data)
        circ.client.streams[sid].finish()
    _, at_server = circ.run()
    assert [e.target for e in of_type(at_server, StreamOpened)] == [
        f"host{i}:80" for i in range(12)
    ]
    assert {sid: d for sid, d in data_of(at_server).items() if d} == {
        sid: d for sid, d in up.items() if d
    }
    assert {e.stream_id for e in of_type(at_server, StreamFinished)} == set(up)
    down = {sid: rnd.randbytes(rnd.randint(1, 30_000)) for sid in up}
    for sid, data in down.items():
        circ.server.accept_stream(sid)
        circ.server.streams[sid].write(data)
        circ.server.streams[sid].finish()
    at_client, _ = circ.run()
    assert data_of(at_client) == down
    assert {e.stream_id for e in of_type(at_client, StreamConnected)} == set(up)
    assert circ.client.streams == circ.server.streams == {}


def test_padding_cells_are_ignored() -> None:
    circ = Circuit(2)
    for _ in range(3):
        assert circ.server.open_cell(circ.forward(circ.client.seal_frame(PaddingFrame()))) == []
    assert circ.server.recv_counter == 3


def test_a_garbled_cell_is_a_remote_error() -> None:
    circ = Circuit(2)
    sealed = circ.forward(circ.client.seal_frame(OpenFrame(1, "a:1")))
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(RemoteProtocolError):
        circ.server.open_cell(tampered)
    assert circ.server.streams == {}


def test_a_lost_cell_desynchronises_the_counters() -> None:
    circ = Circuit(1)
    circ.client.seal_frame(PaddingFrame())  # never delivered
    with pytest.raises(RemoteProtocolError):
        circ.server.open_cell(circ.forward(circ.client.seal_frame(PaddingFrame())))


# -- limits and hostile frames -----------------------------------------------------------


def test_max_streams_attack() -> None:
    """A client opening more than MAX_STREAMS streams gets the excess reset; the server
    never holds more than MAX_STREAMS, and late data for a refused stream is dropped."""
    circ = Circuit(1, window=1024)
    opened = [circ.client.new_stream("x:1") for _ in range(MAX_STREAMS + 20)]
    for s in opened:
        s.write(b"hello")
    at_client, at_server = circ.run()
    assert len(circ.server.streams) == MAX_STREAMS
    assert len(of_type(at_server, StreamOpened)) == MAX_STREAMS
    resets = of_type(at_client, StreamReset)
    assert sorted(e.stream_id for e in resets) == [s.stream_id for s in opened[MAX_STREAMS:]]
    assert all(e.code != 0 for e in resets)
    assert len(circ.client.streams) == MAX_STREAMS
    assert all(s.state is StreamState.RESET for s in opened[MAX_STREAMS:])
    # a hostile client keeps sending for a refused stream: dropped without a trace
    refused = opened[-1].stream_id
    for offset in range(0, 5000, 5):
        assert circ.server.apply(DataFrame(refused, offset, b"spam!")) == []
    assert refused not in circ.server.streams
    # and reopening refused ids costs one RESET each, never a stream slot
    for sid in range(10_000, 10_300):
        assert circ.server.apply(OpenFrame(sid, "y:2")) == []
    assert len(circ.server.streams) == MAX_STREAMS
    # the 300 RESETs (7 bytes each), packed into as few cells as hold them, on the next drain
    assert len(circ.server.cells_to_send()) == -(-300 * 7 // GEOMETRY.cell_payload_size)


def test_a_freed_slot_can_be_reused() -> None:
    server = ServerEnd(GEOMETRY, hop_keys(1)[0])
    for sid in range(MAX_STREAMS):
        server.apply(OpenFrame(sid, "x:1"))
    assert server.apply(OpenFrame(MAX_STREAMS, "x:1")) == []
    assert server.apply(ResetFrame(3, 9)) == [StreamReset(3, 9)]
    assert server.apply(OpenFrame(MAX_STREAMS + 1, "x:1")) == [StreamOpened(MAX_STREAMS + 1, "x:1")]


def test_stream_opened_twice_is_a_remote_error() -> None:
    server = ServerEnd(GEOMETRY, hop_keys(1)[0])
    assert server.apply(OpenFrame(7, "a:1")) == [StreamOpened(7, "a:1")]
    with pytest.raises(RemoteProtocolError, match="opened twice"):
        server.apply(OpenFrame(7, "b:2"))


def test_the_client_end_accepts_no_streams() -> None:
    client = ClientEnd(GEOMETRY, hop_keys(2))
    with pytest.raises(RemoteProtocolError, match="does not accept"):
        client.apply(OpenFrame(1, "a:1"))


def test_local_misuse() -> None:
    client = ClientEnd(GEOMETRY, hop_keys(2))
    client.open_stream(5, "a:1")
    with pytest.raises(LocalProtocolError, match="exists"):
        client.open_stream(5, "a:1")
    with pytest.raises(LocalProtocolError, match="no stream"):
        client.accept_stream(6)


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(9, 0, b"late"),
        DataFrame(9, 0, b"", fin=True),
        AckFrame(9, 0, 100),
        ConnectedFrame(9),
        ResetFrame(9, 3),
    ],
)
@pytest.mark.parametrize("end", ["client", "server"])
def test_late_frames_for_a_dropped_stream_are_ignored(frame: StreamFrame, end: str) -> None:
    circ = Circuit(1)
    circ.client.open_stream(9, "a:1")
    circ.run()
    target: CircuitEnd = circ.client if end == "client" else circ.server
    target.reset_stream(9, 4)
    assert 9 not in target.streams
    assert target.apply(frame) == []
    assert 9 not in target.streams


# -- reset -------------------------------------------------------------------------------


def test_client_reset_reaches_the_server() -> None:
    circ = Circuit(3)
    stream = circ.client.new_stream("a:1")
    stream.write(b"x" * 3000)
    circ.run()
    sid = stream.stream_id
    circ.client.reset_stream(sid, 8)
    assert stream.state is StreamState.RESET
    with pytest.raises(LocalProtocolError):
        stream.write(b"more")
    _, at_server = circ.run()
    assert at_server == [StreamReset(sid, 8)]
    assert circ.client.streams == circ.server.streams == {}
    circ.client.reset_stream(sid, 8)  # resetting again sends nothing
    assert circ.client.cells_to_send() == []


def test_server_reset_reaches_the_client_mid_transfer() -> None:
    circ = Circuit(2, window=2048)
    stream = circ.client.new_stream("a:1")
    circ.run()
    sid = stream.stream_id
    circ.server.accept_stream(sid)
    circ.server.streams[sid].write(b"y" * 100_000)
    for c in circ.server.cells_to_send():  # one window's worth, then the reset
        circ.client.open_cell(circ.backward(c))
    circ.server.reset_stream(sid, 2)
    at_client, _ = circ.run()
    assert at_client[-1] == StreamReset(sid, 2)
    assert len(data_of(at_client).get(sid, b"")) <= 2048
    assert circ.client.streams == circ.server.streams == {}


# -- fuzzing -----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 6000), min_size=1, max_size=6),
    window=st.integers(64, 8192),
    hops=st.integers(1, 3),
)
def test_fuzz_multiplexed_transfer(sizes: list[int], window: int, hops: int) -> None:
    circ = Circuit(hops, window=window)
    rnd = random.Random(len(sizes) * window)
    sent: dict[int, bytes] = {}
    for n in sizes:
        s = circ.client.new_stream("h:1")
        sent[s.stream_id] = rnd.randbytes(n)
        s.write(sent[s.stream_id])
        s.finish()
    _, at_server = circ.run()
    assert data_of(at_server) == {sid: d for sid, d in sent.items() if d}
    assert {e.stream_id for e in of_type(at_server, StreamFinished)} == set(sent)
