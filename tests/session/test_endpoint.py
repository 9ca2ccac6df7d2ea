"""Circuit ends: frame lists sealed into cells and opened again (zmesh/session/endpoint.py).

The streams the frames belong to are the session's (tests/session/test_multipath.py).
"""

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.onion import cell, sphinx
from zmesh.onion.geometry import Geometry
from zmesh.rng import DeterministicRng
from zmesh.session.endpoint import ClientEnd, ServerEnd
from zmesh.session.frames import (
    TOKEN_SIZE,
    AckFrame,
    ConnectedFrame,
    DataFrame,
    LinkFrame,
    OpenFrame,
    PaddingFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    StreamFrame,
    encode_frame,
    encode_stream_frames,
)

GEOMETRY = Geometry(cell_size=1024)  # small cells: the limit of one cell is easy to reach
PAYLOAD = GEOMETRY.cell_payload_size


def hop_keys(n: int, seed: int = 1) -> list[sphinx.HopKeys]:
    rng = DeterministicRng(seed, b"endpoint")
    return [sphinx.derive_hop_keys(GEOMETRY, rng.bytes(32)) for _ in range(n)]


class Circuit:
    """A client end and a server end joined through ``len(hops) - 1`` relays."""

    def __init__(self, hops: int = 3) -> None:
        self.hops = hop_keys(hops)
        self.client = ClientEnd(GEOMETRY, self.hops)
        self.server = ServerEnd(GEOMETRY, self.hops[-1])
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

    def up(self, frames: list[StreamFrame]) -> list[StreamFrame]:
        """Client to server: seal, relay, open."""
        return self.server.open_frames(self.forward(self.client.seal_frames(frames)))

    def down(self, frames: list[StreamFrame]) -> list[StreamFrame]:
        """Server to client."""
        return self.client.open_frames(self.backward(self.server.seal_frames(frames)))


TOKEN = b"\x07" * TOKEN_SIZE
FIRST: list[StreamFrame] = [
    LinkFrame(TOKEN, 0),
    OpenFrame(1, "example.org:443"),
    OpenFrame(2, "例え.jp:80"),
    DataFrame(1, 0, b"GET / HTTP/1.0\r\n\r\n", fin=True),
    PingFrame(1),
]
REPLY: list[StreamFrame] = [
    PongFrame(1),
    ConnectedFrame(1),
    DataFrame(1, 0, b"HTTP/1.0 200 OK\r\n\r\n" + bytes(400)),
    AckFrame(1, 18, 1 << 20, fin=True),
    ResetFrame(2, 5),
]


@pytest.mark.parametrize("hops", [1, 2, 3])
def test_several_frames_per_cell_round_trip_through_the_relays(hops: int) -> None:
    circ = Circuit(hops)
    assert circ.up(FIRST) == FIRST
    assert circ.down(REPLY) == REPLY
    for i in range(5):  # the counters move on together, cell after cell
        assert circ.up([DataFrame(1, 18 + i, b"x", fin=False)]) == [DataFrame(1, 18 + i, b"x")]
        assert circ.down([PongFrame(i)]) == [PongFrame(i)]
    assert circ.client.send_counter == circ.server.recv_counter == 6
    assert circ.server.send_counter == circ.client.recv_counter == 6


def test_a_full_cell_of_data_round_trips() -> None:
    circ = Circuit(3)
    head: list[StreamFrame] = [LinkFrame(TOKEN, 3), PingFrame(9)]
    room = (
        PAYLOAD - sum(len(encode_frame(f)) for f in head) - len(encode_frame(DataFrame(1, 0, b"")))
    )
    frames = [*head, DataFrame(1, 0, bytes(range(256)) * (room // 256) + bytes(room % 256))]
    assert circ.up(frames) == frames


def test_padding_only_cells_carry_no_frames() -> None:
    circ = Circuit(2)
    for frames in ([], [PaddingFrame()]):
        assert circ.up(frames) == []
        assert circ.down(frames) == []
    assert circ.server.recv_counter == circ.client.recv_counter == 2


def test_frames_beyond_one_cell_are_refused_before_sealing() -> None:
    circ = Circuit(1)
    with pytest.raises(ValueError):
        circ.client.seal_frames([DataFrame(1, 0, bytes(PAYLOAD))])
    with pytest.raises(ValueError):
        circ.client.seal_frames([OpenFrame(1, "x" * 256)])
    assert circ.client.send_counter == 0  # nothing was used up: the next cell still opens
    assert circ.up([PingFrame(1)]) == [PingFrame(1)]


def test_a_garbled_cell_is_a_remote_error() -> None:
    circ = Circuit(2)
    sealed = circ.forward(circ.client.seal_frames(FIRST))
    for i in (0, len(sealed) // 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[i] ^= 1
        with pytest.raises(RemoteProtocolError):
            circ.server.open_frames(bytes(tampered))
    assert circ.server.recv_counter == 0  # a garbled cell does not move the counter
    assert circ.server.open_frames(sealed) == FIRST
    sealed = circ.backward(circ.server.seal_frames(REPLY))
    with pytest.raises(RemoteProtocolError):
        circ.client.open_frames(bytes([sealed[0] ^ 1]) + sealed[1:])


def test_an_authentic_cell_with_malformed_frames_is_a_remote_error() -> None:
    """Only the peer could seal it, so it is the peer's protocol error."""
    circ = Circuit(1)
    payload = bytes([42]) + bytes(PAYLOAD - 1)  # no such frame type
    sealed = cell.client_seal(GEOMETRY, circ.hops, 0, payload)
    with pytest.raises(RemoteProtocolError):
        circ.server.open_frames(sealed)
    trailing = encode_frame(PingFrame(1)) + b"\x00\x01"  # non-zero bytes after the padding
    sealed = cell.client_seal(GEOMETRY, circ.hops, 1, trailing + bytes(PAYLOAD - len(trailing)))
    with pytest.raises(RemoteProtocolError):
        circ.server.open_frames(sealed)


def test_a_lost_cell_desynchronises_the_counters() -> None:
    circ = Circuit(1)
    circ.client.seal_frames([PingFrame(1)])  # never delivered
    with pytest.raises(RemoteProtocolError):
        circ.up([PingFrame(2)])
    circ = Circuit(3)
    circ.server.seal_frames([PongFrame(1)])  # lost on the way back
    with pytest.raises(RemoteProtocolError):
        circ.down([PongFrame(2)])


# -- fuzzing -----------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
FRAME = st.one_of(
    st.builds(OpenFrame, u32, st.text(max_size=40).filter(lambda t: len(t.encode()) <= 255)),
    st.builds(DataFrame, u32, u64, st.binary(max_size=300), st.booleans()),
    st.builds(AckFrame, u32, u64, u64, st.booleans()),
    st.builds(ResetFrame, u32, st.integers(0, 2**16 - 1)),
    st.builds(ConnectedFrame, u32),
    st.builds(
        LinkFrame,
        st.binary(min_size=TOKEN_SIZE, max_size=TOKEN_SIZE),
        st.integers(0, 127),
        st.booleans(),
    ),
    st.builds(PingFrame, u64),
    st.builds(PongFrame, u64),
)


@settings(max_examples=150, deadline=None)
@given(
    cells=st.lists(st.tuples(st.booleans(), st.lists(FRAME, max_size=6)), max_size=8),
    hops=st.integers(1, 3),
)
def test_fuzz_frame_lists_round_trip(
    cells: list[tuple[bool, list[StreamFrame]]], hops: int
) -> None:
    """Any frame lists that fit a cell, sent either way in any order, arrive as sent."""
    assume(all(sum(len(encode_frame(f)) for f in frames) <= PAYLOAD for _, frames in cells))
    circ = Circuit(hops)
    for upward, frames in cells:
        assert (circ.up(frames) if upward else circ.down(frames)) == frames
    ups = sum(1 for upward, _ in cells if upward)
    assert circ.client.send_counter == circ.server.recv_counter == ups
    assert circ.server.send_counter == circ.client.recv_counter == len(cells) - ups


@settings(max_examples=100, deadline=None)
@given(payload=st.binary(min_size=PAYLOAD, max_size=PAYLOAD))
def test_fuzz_authentic_garbage_payloads_parse_or_raise_a_remote_error(payload: bytes) -> None:
    circ = Circuit(2)
    sealed = circ.forward(cell.client_seal(GEOMETRY, circ.hops, 0, payload))
    try:
        frames = circ.server.open_frames(sealed)
    except RemoteProtocolError:
        return
    assert encode_stream_frames(frames, PAYLOAD) == payload  # parsed exactly what was there
