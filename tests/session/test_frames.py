"""Stream frames packed into cell payloads (zmesh/session/frames.py)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.onion.geometry import Geometry
from zmesh.session.frames import (
    DATA_OVERHEAD,
    FLAG_FIN,
    MAX_TARGET,
    TOKEN_SIZE,
    AckFrame,
    CellBuilder,
    ConnectedFrame,
    DataFrame,
    LinkFrame,
    OpenFrame,
    PaddingFrame,
    PingFrame,
    PongFrame,
    ResetFrame,
    StreamFrame,
    StreamFrameType,
    decode_stream_frames,
    encode_frame,
    encode_stream_frames,
)

PAYLOAD = Geometry().cell_payload_size
MAX_DATA = PAYLOAD - DATA_OVERHEAD

FRAMES: list[StreamFrame] = [
    PaddingFrame(),
    OpenFrame(1, "example.org:443"),
    OpenFrame(2**32 - 1, ""),
    OpenFrame(7, "ü" * (MAX_TARGET // 2)),
    OpenFrame(7, "x" * MAX_TARGET),
    DataFrame(3, 0, b"hello"),
    DataFrame(3, 5, b"", fin=True),
    DataFrame(3, 2**64 - 1, b""),
    DataFrame(3, 10, bytes(range(256)) * 3, fin=True),
    DataFrame(3, 0, b"\xff" * MAX_DATA),
    AckFrame(4, 0, 0),
    AckFrame(4, 2**64 - 1, 2**64 - 1),
    AckFrame(4, 10, 20, fin=True),
    ResetFrame(5, 0),
    ResetFrame(5, 0xFFFF),
    ConnectedFrame(7),
    LinkFrame(bytes(range(TOKEN_SIZE)), 0),
    LinkFrame(b"\xff" * TOKEN_SIZE, 127, resume=True),
    PingFrame(0),
    PingFrame(2**64 - 1),
    PongFrame(12345),
]


def encode_stream_frame(frame: StreamFrame, payload_size: int) -> bytes:
    return encode_stream_frames([frame], payload_size)


def decode_stream_frame(payload: bytes) -> StreamFrame:
    """The one frame of a payload (an empty payload is the PADDING frame)."""
    frames = decode_stream_frames(payload)
    assert len(frames) <= 1
    return frames[0] if frames else PaddingFrame()


def fits(frame: StreamFrame, n: int) -> bool:
    try:
        encode_stream_frame(frame, n)
    except ValueError:
        return False
    return True


def body_len(frame: StreamFrame) -> int:
    """The smallest payload size ``frame`` fits in (its unpadded length)."""
    lo, hi = 0, PAYLOAD  # not fits(lo), fits(hi)
    assert fits(frame, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(frame, mid) else (mid, hi)
    return hi


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("payload_size", [PAYLOAD, 600])
def test_round_trip(frame: StreamFrame, payload_size: int) -> None:
    if isinstance(frame, DataFrame) and len(frame.data) > payload_size - DATA_OVERHEAD:
        with pytest.raises(ValueError, match="larger than the cell payload"):
            encode_stream_frame(frame, payload_size)
        return
    data = encode_stream_frame(frame, payload_size)
    assert len(data) == payload_size
    assert decode_stream_frame(data) == frame


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_round_trip_without_padding(frame: StreamFrame) -> None:
    n = body_len(frame)
    data = encode_stream_frame(frame, n)
    assert decode_stream_frame(data) == frame
    if not isinstance(frame, PaddingFrame):
        assert data[0] == StreamFrameType[type(frame).__name__.removesuffix("Frame").upper()]


def test_data_overhead_is_exact() -> None:
    assert body_len(DataFrame(1, 0, b"abc")) == DATA_OVERHEAD + 3
    encode_stream_frame(DataFrame(1, 0, bytes(MAX_DATA)), PAYLOAD)
    with pytest.raises(ValueError, match="larger"):
        encode_stream_frame(DataFrame(1, 0, bytes(MAX_DATA + 1)), PAYLOAD)


def test_all_zero_payload_is_padding() -> None:
    assert decode_stream_frames(bytes(PAYLOAD)) == []
    assert decode_stream_frames(b"\x00") == []
    assert decode_stream_frames(b"") == []
    assert encode_frame(PaddingFrame()) == b""


@pytest.mark.parametrize(
    "frame",
    [
        OpenFrame(1, "x" * (MAX_TARGET + 1)),
        OpenFrame(1, "é" * (MAX_TARGET // 2 + 1)),
    ],
)
def test_encode_target_too_long(frame: OpenFrame) -> None:
    with pytest.raises(ValueError, match="too long"):
        encode_stream_frame(frame, PAYLOAD)


@pytest.mark.parametrize("frame", [f for f in FRAMES if body_len(f) > 1], ids=repr)
def test_encode_too_big_for_payload(frame: StreamFrame) -> None:
    with pytest.raises(ValueError):
        encode_stream_frame(frame, body_len(frame) - 1)


@pytest.mark.parametrize("frame", FRAMES[1:], ids=lambda f: type(f).__name__)
def test_every_truncation_is_rejected(frame: StreamFrame) -> None:
    data = encode_stream_frame(frame, body_len(frame))
    assert decode_stream_frames(data[:0]) == []  # an empty payload holds no frame
    for n in range(1, len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_stream_frames(data[:n])


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("extra", [b"\x01", b"\x00" * 5 + b"\x80"])
def test_non_zero_after_padding_is_rejected(frame: StreamFrame, extra: bytes) -> None:
    data = encode_stream_frame(frame, body_len(frame)) + b"\x00"
    assert decode_stream_frame(data + bytes(len(extra))) == frame  # zeros are padding
    with pytest.raises(RemoteProtocolError, match="non-zero"):
        decode_stream_frames(data + extra)


@pytest.mark.parametrize("frame", FRAMES[1:], ids=lambda f: type(f).__name__)
def test_bytes_right_after_a_frame_are_the_next_frame(frame: StreamFrame) -> None:
    data = encode_stream_frame(frame, body_len(frame))
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_stream_frames(data + b"\x01")  # an OPEN cut short
    assert decode_stream_frames(data + encode_frame(PingFrame(9))) == [frame, PingFrame(9)]


@pytest.mark.parametrize("kind", [max(StreamFrameType) + 1, 0x80, 0xFF])
def test_unknown_type(kind: int) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown stream frame type"):
        decode_stream_frames(bytes([kind]) + bytes(PAYLOAD - 1))


@pytest.mark.parametrize("flags", [2, 3, 0x80, 0xFF])
def test_data_unknown_flags(flags: int) -> None:
    data = bytearray(encode_stream_frame(DataFrame(1, 0, b"x", fin=True), PAYLOAD))
    assert data[13] == FLAG_FIN
    data[13] = flags
    with pytest.raises(RemoteProtocolError, match="flags"):
        decode_stream_frames(bytes(data))


def test_data_length_past_the_end() -> None:
    data = encode_stream_frame(DataFrame(1, 0, b"x" * 10), 100)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_stream_frames(data[:14] + (200).to_bytes(2, "big") + data[16:])


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"ok\x80"])
def test_open_target_not_utf8(raw: bytes) -> None:
    data = b"\x01" + (9).to_bytes(4, "big") + bytes([len(raw)]) + raw + bytes(10)
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_stream_frames(data)


def test_open_target_length_past_the_end() -> None:
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_stream_frames(b"\x01" + (9).to_bytes(4, "big") + b"\xff" + b"abc")


# -- several frames per cell -------------------------------------------------------------


def test_cell_builder_fills_a_cell_then_refuses() -> None:
    builder = CellBuilder(100)
    assert builder.empty and builder.room == 100
    assert builder.add(AckFrame(1, 2, 3))
    assert builder.add(PingFrame(7))
    assert builder.room == 100 - 22 - 9
    data = DataFrame(1, 0, b"x" * (builder.room - DATA_OVERHEAD))
    assert not builder.add(DataFrame(1, 0, data.data + b"y"))  # one byte too many
    assert builder.add(data)
    assert builder.room == 0
    assert not builder.add(PingFrame(8))
    payload = builder.payload()
    assert len(payload) == 100
    assert decode_stream_frames(payload) == [AckFrame(1, 2, 3), PingFrame(7), data]
    assert decode_stream_frames(payload) == builder.frames


def test_encode_several_frames_too_big() -> None:
    with pytest.raises(ValueError, match="larger than the cell payload"):
        encode_stream_frames([PingFrame(1)] * 12, 100)  # 108 bytes
    assert len(decode_stream_frames(encode_stream_frames([PingFrame(1)] * 11, 100))) == 11


def test_link_token_size_and_leg_number_are_checked() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        encode_frame(LinkFrame(b"short", 1))
    with pytest.raises(ValueError, match="below 128"):
        encode_frame(LinkFrame(bytes(TOKEN_SIZE), 128))
    # the top bit of the leg byte is RESUME
    wire = encode_frame(LinkFrame(bytes(TOKEN_SIZE), 5, resume=True))
    assert wire[-1] == 0x85
    assert decode_stream_frames(wire) == [LinkFrame(bytes(TOKEN_SIZE), 5, resume=True)]


def test_every_frame_of_a_packed_cell_round_trips() -> None:
    frames = [f for f in FRAMES if not isinstance(f, PaddingFrame) and body_len(f) < 600]
    payload = encode_stream_frames(frames, sum(body_len(f) for f in frames) + 3)
    assert decode_stream_frames(payload) == frames


def test_packed_payload_split_anywhere_is_rejected_or_a_prefix() -> None:
    """A payload cut at any byte yields a prefix of its frames or a clean error."""
    frames: list[StreamFrame] = [AckFrame(1, 5, 9), PingFrame(3), DataFrame(1, 0, b"abc", True)]
    payload = encode_stream_frames(frames, 80)
    for n in range(len(payload) + 1):
        try:
            got = decode_stream_frames(payload[:n])
        except RemoteProtocolError:
            continue
        assert got == frames[: len(got)]


# -- fuzzing -----------------------------------------------------------------------------


def parses_canonically_or_rejects(data: bytes) -> None:
    try:
        frames = decode_stream_frames(data)
    except RemoteProtocolError:
        return
    # every accepted payload is the unique encoding of its frames
    assert encode_stream_frames(frames, len(data)) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
@example(b"")
@example(b"\x00")
@example(b"\x02" + bytes(DATA_OVERHEAD - 1))
@example(b"\x02" + bytes(DATA_OVERHEAD - 2))
@example(b"\x02" + bytes(14) + b"\x00\x01")
@example(b"\x03" + bytes(20))
@example(b"\x03" + bytes(19))
@example(b"\x04" + bytes(6))
@example(b"\x04" + bytes(5))
@example(b"\x01" + bytes(4) + b"\x01\xff")
@example(b"\x06" + bytes(TOKEN_SIZE))
@example(b"\x06" + bytes(TOKEN_SIZE + 1))
@example(b"\x07" + bytes(7))
@example(b"\x08" + bytes(8) + b"\x07" + bytes(8))
def test_fuzz_arbitrary_payloads(data: bytes) -> None:
    parses_canonically_or_rejects(data)


@settings(max_examples=300, deadline=None)
@given(
    kinds=st.lists(st.integers(0, 9), min_size=1, max_size=4),
    body=st.binary(max_size=40),
    padding=st.lists(st.integers(0, 255), max_size=4).map(bytes) | st.just(b""),
)
def test_fuzz_typed_payloads(kinds: list[int], body: bytes, padding: bytes) -> None:
    parts = [bytes([k]) + body[i * 10 : i * 10 + 10] for i, k in enumerate(kinds)]
    parses_canonically_or_rejects(b"".join(parts) + padding)


FRAME_STRATEGY = st.one_of(
    st.builds(OpenFrame, st.integers(0, 2**32 - 1), st.text(max_size=60)),
    st.builds(
        DataFrame,
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**64 - 1),
        st.binary(max_size=300),
        st.booleans(),
    ),
    st.builds(
        AckFrame, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)
    ),
    st.builds(ResetFrame, st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF)),
    st.builds(ConnectedFrame, st.integers(0, 2**32 - 1)),
    st.builds(
        LinkFrame,
        st.binary(min_size=TOKEN_SIZE, max_size=TOKEN_SIZE),
        st.integers(0, 127),
        st.booleans(),
    ),
    st.builds(PingFrame, st.integers(0, 2**64 - 1)),
    st.builds(PongFrame, st.integers(0, 2**64 - 1)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FRAME_STRATEGY, max_size=8))
def test_fuzz_round_trip(frames: list[StreamFrame]) -> None:
    data = encode_stream_frames(frames, PAYLOAD)
    assert decode_stream_frames(data) == frames


@settings(max_examples=200, deadline=None)
@given(st.lists(FRAME_STRATEGY, min_size=1, max_size=4), st.data())
def test_fuzz_builder_matches_encoder(frames: list[StreamFrame], data: st.DataObject) -> None:
    size = data.draw(st.integers(0, 800))
    builder = CellBuilder(size)
    fitted = [f for f in frames if builder.add(f)]
    assert builder.payload() == encode_stream_frames(fitted, size)
    assert decode_stream_frames(builder.payload()) == fitted
