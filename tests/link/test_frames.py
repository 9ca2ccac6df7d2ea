"""Link frames, batches of them in one link message, and the FrameDecoder
(zmesh/link/frames.py)."""

import itertools
import random

import pytest
from helpers import splits
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.crypto import xwing
from zmesh.dht.messages import MAX_MESSAGE_SIZE
from zmesh.errors import CloseCode, RemoteProtocolError
from zmesh.link.frames import (
    FRAME_HEADER,
    IDENTITY_KEYS_SIZE,
    LINK_VERSION,
    MAC_SIZE,
    MAX_BATCH,
    MAX_DESCRIPTOR,
    MAX_DHT,
    MAX_PADDING,
    MAX_SIGNAL_PAYLOAD,
    VARIABLE_SIZE,
    Cell,
    Close,
    Create,
    Created,
    Credit,
    DescriptorFrame,
    Destroy,
    DhtFrame,
    Frame,
    FrameDecoder,
    FrameType,
    Hello1,
    Hello2,
    Hello3,
    Padding,
    Ping,
    Pong,
    Signal,
    body_sizes,
    encode_cell,
    encode_frame,
    pack_frames,
)
from zmesh.onion.geometry import Geometry
from zmesh.signaling.sdp import MAX_MESSAGE_SIZE as SDP_MAX_MESSAGE_SIZE

GEOMETRY = Geometry()
SMALL = Geometry(max_hops=2, cell_size=512)
MAX_BODY = max(body_sizes(GEOMETRY).values())
FIXED_TYPES = [t for t in FrameType if t not in VARIABLE_SIZE]


def filler(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def sample_frames(g: Geometry) -> list[Frame]:
    """One or more frames of every type, with bodies of exactly the right sizes."""
    return [
        Hello1(filler(IDENTITY_KEYS_SIZE, 1), filler(xwing.CIPHERTEXT_SIZE, 2)),
        Hello2(filler(xwing.CIPHERTEXT_SIZE, 3), filler(MAC_SIZE, 4)),
        Hello3(filler(MAC_SIZE, 5)),
        Create(0, 0, filler(g.header_size, 6)),
        Create(2**32 - 1, 2**32 - 1, bytes(g.header_size)),
        Created(1234, filler(g.created_size, 7)),
        Cell(0xDEADBEEF, filler(g.cell_size, 8)),
        Cell(1, bytes(g.cell_size)),
        *(Destroy(42, code) for code in CloseCode),
        *(Close(code) for code in CloseCode),
        Padding(0),
        Padding(1),
        Padding(1000),
        Padding(MAX_PADDING),
        Credit(0),
        Credit(2**32 - 1),
        DescriptorFrame(b""),
        DescriptorFrame(filler(MAX_DESCRIPTOR, 9)),
        Signal(bytes(32), b"\xff" * 32, 0, b""),
        Signal(filler(32, 1), filler(32, 2), 255, filler(MAX_SIGNAL_PAYLOAD, 3)),
        DhtFrame(b""),
        DhtFrame(filler(37, 10)),
        DhtFrame(filler(MAX_DHT, 11)),
        Ping(0),
        Ping(2**32 - 1),
        Pong(0),
        Pong(0x01020304),
    ]


FRAMES = sample_frames(GEOMETRY)
STREAM = b"".join(encode_frame(f) for f in FRAMES)


def decode_all(data: bytes, g: Geometry = GEOMETRY) -> list[Frame]:
    dec = FrameDecoder(g)
    out = dec.feed(data)
    assert dec.buffered == 0
    return out


def header(kind: int, length: int) -> bytes:
    return bytes([kind]) + length.to_bytes(3, "big")


# -- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip_each_frame(frame: Frame) -> None:
    data = encode_frame(frame)
    kind = data[0]
    length = int.from_bytes(data[1:4], "big")
    assert len(data) == FRAME_HEADER + length
    if FrameType(kind) not in VARIABLE_SIZE:
        assert length == body_sizes(GEOMETRY)[FrameType(kind)]
    assert decode_all(data) == [frame]


def test_fixed_body_sizes_follow_the_geometry() -> None:
    sizes = body_sizes(GEOMETRY)
    assert sizes[FrameType.CREATE] == 8 + GEOMETRY.header_size
    assert sizes[FrameType.CELL] == 4 + GEOMETRY.cell_size
    assert sizes[FrameType.CREATED] == 4 + GEOMETRY.created_size
    assert sizes[FrameType.HELLO1] == 1 + IDENTITY_KEYS_SIZE + xwing.CIPHERTEXT_SIZE
    assert encode_frame(Hello1(bytes(IDENTITY_KEYS_SIZE), bytes(xwing.CIPHERTEXT_SIZE)))[4] == (
        LINK_VERSION
    )


def test_round_trip_other_geometry() -> None:
    frames = sample_frames(SMALL)
    data = b"".join(encode_frame(f) for f in frames)
    assert decode_all(data, SMALL) == frames


def test_frame_from_another_geometry_is_rejected() -> None:
    for frame in (Cell(1, bytes(SMALL.cell_size)), Create(1, 1, bytes(SMALL.header_size))):
        with pytest.raises(RemoteProtocolError):
            FrameDecoder(GEOMETRY).feed(encode_frame(frame))


def test_concatenated_frames() -> None:
    assert decode_all(STREAM) == FRAMES
    assert decode_all(STREAM * 3) == FRAMES * 3


# -- split input -------------------------------------------------------------------------


def test_one_byte_at_a_time() -> None:
    dec = FrameDecoder(GEOMETRY)
    out: list[Frame] = []
    for i in range(len(STREAM)):
        out += dec.feed(STREAM[i : i + 1])
        assert dec.buffered < FRAME_HEADER + MAX_BODY
    assert out == FRAMES
    assert dec.buffered == 0


@pytest.mark.parametrize("seed", range(5))
def test_random_splits(seed: int) -> None:
    dec = FrameDecoder(GEOMETRY)
    out: list[Frame] = []
    for piece in splits(STREAM, random.Random(seed), max_chunk=5000):
        out += dec.feed(piece)
    assert out == FRAMES
    assert dec.buffered == 0


def test_empty_feed() -> None:
    dec = FrameDecoder(GEOMETRY)
    assert dec.feed(b"") == []
    assert dec.buffered == 0


def test_partial_frame_is_buffered_until_complete() -> None:
    data = encode_frame(FRAMES[6])  # a CELL
    dec = FrameDecoder(GEOMETRY)
    assert dec.feed(data[:-1]) == []
    assert dec.buffered == len(data) - 1
    assert dec.feed(data[-1:] + data[:3]) == [FRAMES[6]]
    assert dec.buffered == 3  # an incomplete header waits too
    assert dec.feed(data[3:]) == [FRAMES[6]]
    assert dec.buffered == 0


def test_partial_frame_after_complete_ones() -> None:
    tail = encode_frame(FRAMES[0])
    dec = FrameDecoder(GEOMETRY)
    assert dec.feed(STREAM + tail[:100]) == FRAMES
    assert dec.buffered == 100
    assert dec.feed(tail[100:]) == [FRAMES[0]]


# -- rejection ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [0, max(FrameType) + 1, 0x7F, 0xFF])
def test_unknown_type(kind: int) -> None:
    dec = FrameDecoder(GEOMETRY)
    with pytest.raises(RemoteProtocolError, match="unknown link frame type"):
        dec.feed(header(kind, 1) + b"\x00")


def test_unknown_type_after_valid_frames() -> None:
    with pytest.raises(RemoteProtocolError, match="unknown"):
        FrameDecoder(GEOMETRY).feed(STREAM + header(0, 0))


@pytest.mark.parametrize("kind", FIXED_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("delta", [-1, +1])
def test_wrong_length_for_fixed_size_types(kind: FrameType, delta: int) -> None:
    length = body_sizes(GEOMETRY)[kind] + delta
    dec = FrameDecoder(GEOMETRY)
    with pytest.raises(RemoteProtocolError, match=kind.name) as exc:
        dec.feed(header(kind, length) + bytes(length))
    assert exc.value.code is CloseCode.PROTOCOL


@pytest.mark.parametrize("kind", FIXED_TYPES, ids=lambda t: t.name)
def test_zero_and_huge_lengths_for_fixed_size_types(kind: FrameType) -> None:
    for length in (0, 2**24 - 1):
        with pytest.raises(RemoteProtocolError):
            FrameDecoder(GEOMETRY).feed(header(kind, length))


@pytest.mark.parametrize("length", [MAX_PADDING + 1, 2**24 - 1])
def test_oversized_padding(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="PADDING"):
        FrameDecoder(GEOMETRY).feed(header(FrameType.PADDING, length))


@pytest.mark.parametrize("length", [MAX_DHT + 1, 2**24 - 1])
def test_oversized_dht_frame(length: int) -> None:
    with pytest.raises(RemoteProtocolError, match="DHT") as exc:
        FrameDecoder(GEOMETRY).feed(header(FrameType.DHT, length))
    assert exc.value.code is CloseCode.PROTOCOL


def test_dht_frame_holds_the_largest_dht_message() -> None:
    assert MAX_DHT >= MAX_MESSAGE_SIZE
    assert FrameType.DHT == 15  # 13 and 14 are the link PING/PONG


def test_bad_length_is_rejected_from_the_header_alone() -> None:
    """The decoder never waits for (or buffers) the body of a frame it will reject."""
    dec = FrameDecoder(GEOMETRY)
    assert dec.feed(header(FrameType.PADDING, 2**24 - 1)[:3]) == []
    with pytest.raises(RemoteProtocolError):
        dec.feed(header(FrameType.PADDING, 2**24 - 1)[3:])
    assert dec.buffered == FRAME_HEADER


def test_errors_are_sticky() -> None:
    dec = FrameDecoder(GEOMETRY)
    with pytest.raises(RemoteProtocolError):
        dec.feed(header(0xFF, 0))
    with pytest.raises(RemoteProtocolError):
        dec.feed(STREAM)


@pytest.mark.parametrize("version", [0, LINK_VERSION + 1, 0xFF])
def test_hello1_unknown_version(version: int) -> None:
    data = bytearray(encode_frame(FRAMES[0]))
    data[FRAME_HEADER] = version
    with pytest.raises(RemoteProtocolError, match="version") as exc:
        FrameDecoder(GEOMETRY).feed(bytes(data))
    assert exc.value.code is CloseCode.HANDSHAKE


@pytest.mark.parametrize("code", [max(CloseCode) + 1, 0x7F, 0xFF])
def test_unknown_close_codes_map_to_protocol(code: int) -> None:
    frames = decode_all(
        header(FrameType.DESTROY, 5)
        + (9).to_bytes(4, "big")
        + bytes([code])
        + header(FrameType.CLOSE, 1)
        + bytes([code])
    )
    assert frames == [Destroy(9, CloseCode.PROTOCOL), Close(CloseCode.PROTOCOL)]


def test_ping_and_pong_bodies_are_exactly_a_u32() -> None:
    seq = (0xA1B2C3D4).to_bytes(4, "big")
    assert decode_all(header(FrameType.PING, 4) + seq) == [Ping(0xA1B2C3D4)]
    assert decode_all(header(FrameType.PONG, 4) + seq) == [Pong(0xA1B2C3D4)]
    assert encode_frame(Ping(1)) == bytes([13, 0, 0, 4, 0, 0, 0, 1])
    assert encode_frame(Pong(1)) == bytes([14, 0, 0, 4, 0, 0, 0, 1])
    for kind in (FrameType.PING, FrameType.PONG):
        for length in (0, 3, 5, 8):
            with pytest.raises(RemoteProtocolError, match=kind.name) as exc:
                FrameDecoder(GEOMETRY).feed(header(kind, length) + bytes(length))
            assert exc.value.code is CloseCode.PROTOCOL


def test_padding_contents_are_ignored() -> None:
    assert decode_all(header(FrameType.PADDING, 3) + b"abc") == [Padding(3)]


# -- fuzzing -----------------------------------------------------------------------------


def feed_in_pieces(data: bytes, cuts: list[int]) -> tuple[list[Frame], int, bool]:
    """Feed ``data`` cut at ``cuts``; return frames, bytes buffered and whether it failed."""
    dec = FrameDecoder(GEOMETRY)
    out: list[Frame] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    for a, b in itertools.pairwise(bounds):
        try:
            out += dec.feed(data[a:b])
        except RemoteProtocolError:
            return out, dec.buffered, True
        assert dec.buffered < FRAME_HEADER + MAX_BODY
    return out, dec.buffered, False


SMALL_FRAMES = st.one_of(
    st.builds(Hello3, st.binary(min_size=MAC_SIZE, max_size=MAC_SIZE)),
    st.builds(Destroy, st.integers(0, 2**32 - 1), st.sampled_from(list(CloseCode))),
    st.builds(Close, st.sampled_from(list(CloseCode))),
    st.builds(Padding, st.integers(0, 64)),
    st.builds(DhtFrame, st.binary(max_size=64)),
    st.builds(Ping, st.integers(0, 2**32 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1)),
    st.builds(
        Created,
        st.integers(0, 2**32 - 1),
        st.binary(min_size=GEOMETRY.created_size, max_size=GEOMETRY.created_size),
    ),
    st.builds(
        Cell,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255).map(lambda b: bytes([b]) * GEOMETRY.cell_size),
    ),
)
SEGMENTS = st.lists(
    st.one_of(SMALL_FRAMES.map(encode_frame), st.binary(max_size=12)), max_size=8
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=st.one_of(st.binary(max_size=200), SEGMENTS), cuts=st.lists(st.integers(0, 10**6)))
@example(data=b"", cuts=[])
@example(data=encode_frame(Close(CloseCode.NONE)), cuts=[1, 2, 3, 4])
@example(data=encode_frame(Close(CloseCode.NONE))[:-1], cuts=[])
@example(data=encode_frame(Close(CloseCode.NONE)) + b"\x08", cuts=[])
@example(data=header(FrameType.CLOSE, 0), cuts=[])
@example(data=header(FrameType.CLOSE, 2) + b"\x00\x00", cuts=[])
@example(data=header(FrameType.PADDING, MAX_PADDING), cuts=[2])
@example(data=header(FrameType.PADDING, MAX_PADDING + 1), cuts=[])
@example(data=encode_frame(Ping(7)) + encode_frame(Pong(7)), cuts=[3, 5, 9])
@example(data=header(FrameType.PONG, 5) + bytes(5), cuts=[])
def test_fuzz_any_split_gives_the_same_result(data: bytes, cuts: list[int]) -> None:
    whole, whole_buffered, whole_failed = feed_in_pieces(data, [])
    split, split_buffered, split_failed = feed_in_pieces(data, cuts)
    single, _, single_failed = feed_in_pieces(data, list(range(len(data))))
    assert whole_failed == split_failed == single_failed
    if not whole_failed:
        assert split == whole == single
        assert split_buffered == whole_buffered
        # whatever is buffered is a strict prefix of one frame
        consumed = sum(len(encode_frame(f)) for f in whole)
        assert whole_buffered == len(data) - consumed
    else:
        # frames completed before the bad one come out identically when fed piecewise
        assert single == split[: len(single)] or split == single[: len(split)]


@settings(max_examples=100, deadline=None)
@given(st.lists(SMALL_FRAMES, max_size=10), st.randoms(use_true_random=False))
def test_fuzz_valid_frames_round_trip_in_random_splits(
    frames: list[Frame], rnd: random.Random
) -> None:
    data = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder(GEOMETRY)
    out: list[Frame] = []
    for piece in splits(data, rnd, max_chunk=300):
        out += dec.feed(piece)
    assert out == frames
    assert dec.buffered == 0


# -- batches: several frames in one link message (D47) -----------------------------------


def messages_of(frames: list[Frame], limit: int = MAX_BATCH) -> list[bytes]:
    return pack_frames([encode_frame(f) for f in frames], limit)


def decode_messages(messages: list[bytes]) -> list[Frame]:
    dec = FrameDecoder(GEOMETRY)
    return [f for m in messages for f in dec.feed_message(m)]


def test_a_batch_fits_every_peers_messages() -> None:
    assert MAX_BATCH == 65536 <= SDP_MAX_MESSAGE_SIZE  # RFC 8841's default, and ours
    assert FRAME_HEADER + MAX_BODY <= SDP_MAX_MESSAGE_SIZE  # every frame fits alone


def test_batches_round_trip_every_frame_type() -> None:
    messages = messages_of(FRAMES)
    assert 1 < len(messages) < len(FRAMES)
    assert all(len(m) <= MAX_BATCH for m in messages if len(m) > FRAME_HEADER + MAX_PADDING)
    assert decode_messages(messages) == FRAMES
    assert b"".join(messages) == STREAM  # packing adds no byte


def test_a_lone_frame_goes_alone_and_uncopied() -> None:
    cell = encode_cell(7, bytes(GEOMETRY.cell_size))
    assert pack_frames([cell])[0] is cell
    assert pack_frames([]) == []


def test_cells_fill_a_batch_to_the_limit() -> None:
    cell = encode_cell(7, bytes(GEOMETRY.cell_size))
    per_batch = MAX_BATCH // len(cell)
    messages = pack_frames([cell] * (2 * per_batch + 1))
    assert [len(m) for m in messages] == [per_batch * len(cell)] * 2 + [len(cell)]


def test_a_frame_over_the_limit_goes_alone() -> None:
    small, big = encode_frame(Ping(1)), encode_frame(Padding(100))
    assert pack_frames([small, big, small], limit=50) == [small, big, small]
    assert pack_frames([small, small, big], limit=16) == [small + small, big]


def test_batches_decode_the_same_one_byte_at_a_time() -> None:
    """A batch is whole frames back to back: the stream decoder splits it the same way."""
    messages = messages_of(FRAMES, limit=70_000)
    dec = FrameDecoder(GEOMETRY)
    out = [f for m in messages for i in range(len(m)) for f in dec.feed(m[i : i + 1])]
    assert out == FRAMES and dec.buffered == 0


def test_trailing_data_after_a_batch_is_rejected() -> None:
    message = messages_of([Ping(1), Pong(2)])[0]
    with pytest.raises(RemoteProtocolError):
        FrameDecoder(GEOMETRY).feed_message(message + b"\x0d")


@pytest.mark.parametrize("cut", [1, FRAME_HEADER, FRAME_HEADER + 3])
def test_a_message_ending_inside_a_frame_is_rejected(cut: int) -> None:
    data = encode_frame(Ping(1)) + encode_frame(Pong(2))
    with pytest.raises(RemoteProtocolError, match="ends inside a frame"):
        FrameDecoder(GEOMETRY).feed_message(data[: len(data) - cut])


def test_a_batch_whose_length_claims_more_than_the_message_is_rejected() -> None:
    """A DHT frame claiming the rest of the batch and more: an error at once, not a wait
    for the next message."""
    body = b"x" * 10
    lying = header(FrameType.DHT, len(body) + 100) + body + encode_frame(Ping(1))
    with pytest.raises(RemoteProtocolError, match="ends inside a frame"):
        FrameDecoder(GEOMETRY).feed_message(lying)


def test_a_batch_whose_length_claims_less_is_rejected() -> None:
    """A CELL claiming too few bytes: a wrong fixed length (and the rest would be garbage)."""
    cell = bytearray(encode_cell(1, bytes(GEOMETRY.cell_size)))
    cell[1:4] = (4 + GEOMETRY.cell_size - 1).to_bytes(3, "big")
    with pytest.raises(RemoteProtocolError, match="CELL frame"):
        FrameDecoder(GEOMETRY).feed_message(bytes(cell) + encode_frame(Ping(1)))


def test_message_errors_are_sticky() -> None:
    dec = FrameDecoder(GEOMETRY)
    with pytest.raises(RemoteProtocolError):
        dec.feed_message(encode_frame(Ping(1))[:-1])
    with pytest.raises(RemoteProtocolError, match="after a malformed one"):
        dec.feed_message(encode_frame(Ping(1)))


# Built from integers only: with -bb, hypothesis's own cache compares the bytes and the
# integers of two choice sequences on a hash collision and raises BytesWarning.
BYTES = st.lists(st.integers(0, 255), max_size=100).map(bytes)
BATCH_FRAMES = st.one_of(
    st.builds(Destroy, st.integers(0, 2**32 - 1), st.sampled_from(list(CloseCode))),
    st.builds(Close, st.sampled_from(list(CloseCode))),
    st.builds(Padding, st.integers(0, 64)),
    st.builds(DhtFrame, BYTES),
    st.builds(Ping, st.integers(0, 2**32 - 1)),
    st.builds(Pong, st.integers(0, 2**32 - 1)),
    st.builds(
        Cell,
        st.integers(0, 2**32 - 1),
        st.integers(0, 255).map(lambda b: bytes([b]) * GEOMETRY.cell_size),
    ),
)
BATCHES = st.lists(st.one_of(BATCH_FRAMES.map(encode_frame), BYTES), max_size=6).map(b"".join)


def feed_messages(messages: list[bytes]) -> tuple[list[Frame], bool]:
    dec = FrameDecoder(GEOMETRY)
    out: list[Frame] = []
    for message in messages:
        try:
            out += dec.feed_message(message)
        except RemoteProtocolError:
            return out, True
        assert dec.buffered == 0
    return out, False


@settings(max_examples=300, deadline=None)
@given(
    messages=st.lists(st.one_of(BYTES, BATCHES), max_size=5),
)
@example(messages=[header(FrameType.DHT, 5) + b"abc"])
@example(messages=[encode_frame(Ping(1)), header(FrameType.PADDING, 2**24 - 1)])
@example(messages=[encode_frame(Ping(1)) + encode_frame(Ping(2))[:6]])
def test_fuzz_messages_parse_whole_or_fail_cleanly(messages: list[bytes]) -> None:
    """Any sequence of messages either decodes to the frames of their concatenation (each
    message ending on a frame boundary) or raises RemoteProtocolError, nothing else."""
    out, failed = feed_messages(messages)
    stream_dec = FrameDecoder(GEOMETRY)
    stream: list[Frame] = []
    stream_failed = False
    boundaries_ok = True
    for message in messages:
        try:
            stream += stream_dec.feed(message)
        except RemoteProtocolError:
            stream_failed = True
            break
        boundaries_ok = boundaries_ok and stream_dec.buffered == 0
    if failed:
        assert stream_failed or not boundaries_ok
    else:
        assert out == stream and not stream_failed and boundaries_ok


@settings(max_examples=100, deadline=None)
@given(
    frames=st.lists(BATCH_FRAMES, max_size=40),
    limit=st.integers(GEOMETRY.cell_size + 8, 4 * (GEOMETRY.cell_size + 8)),
)
def test_fuzz_packed_frames_round_trip(frames: list[Frame], limit: int) -> None:
    messages = messages_of(frames, limit)
    assert all(len(m) <= limit for m in messages)
    assert decode_messages(messages) == frames
