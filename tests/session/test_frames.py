"""Stream frames carried in cell payloads (zmesh/session/frames.py)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.onion.geometry import Geometry
from zmesh.session.frames import (
    DATA_OVERHEAD,
    FLAG_FIN,
    MAX_TARGET,
    AckFrame,
    ConnectedFrame,
    DataFrame,
    OpenFrame,
    PaddingFrame,
    ResetFrame,
    StreamFrame,
    StreamFrameType,
    decode_stream_frame,
    encode_stream_frame,
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
]


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
    assert decode_stream_frame(bytes(PAYLOAD)) == PaddingFrame()
    assert decode_stream_frame(b"\x00") == PaddingFrame()


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
    for n in range(len(data)):
        with pytest.raises(RemoteProtocolError):
            decode_stream_frame(data[:n])


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
@pytest.mark.parametrize("extra", [b"\x01", b"\x00" * 5 + b"\x80"])
def test_trailing_non_zero_is_rejected(frame: StreamFrame, extra: bytes) -> None:
    data = encode_stream_frame(frame, body_len(frame))
    assert decode_stream_frame(data + bytes(len(extra))) == frame  # zeros are padding
    with pytest.raises(RemoteProtocolError, match="non-zero"):
        decode_stream_frame(data + extra)


@pytest.mark.parametrize("kind", [max(StreamFrameType) + 1, 0x80, 0xFF])
def test_unknown_type(kind: int) -> None:
    with pytest.raises(RemoteProtocolError, match="unknown stream frame type"):
        decode_stream_frame(bytes([kind]) + bytes(PAYLOAD - 1))


@pytest.mark.parametrize("flags", [2, 3, 0x80, 0xFF])
def test_data_unknown_flags(flags: int) -> None:
    data = bytearray(encode_stream_frame(DataFrame(1, 0, b"x", fin=True), PAYLOAD))
    assert data[13] == FLAG_FIN
    data[13] = flags
    with pytest.raises(RemoteProtocolError, match="flags"):
        decode_stream_frame(bytes(data))


def test_data_length_past_the_end() -> None:
    data = encode_stream_frame(DataFrame(1, 0, b"x" * 10), 100)
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_stream_frame(data[:14] + (200).to_bytes(2, "big") + data[16:])


@pytest.mark.parametrize("raw", [b"\xff", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80", b"ok\x80"])
def test_open_target_not_utf8(raw: bytes) -> None:
    data = b"\x01" + (9).to_bytes(4, "big") + bytes([len(raw)]) + raw + bytes(10)
    with pytest.raises(RemoteProtocolError, match="UTF-8"):
        decode_stream_frame(data)


def test_open_target_length_past_the_end() -> None:
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decode_stream_frame(b"\x01" + (9).to_bytes(4, "big") + b"\xff" + b"abc")


# -- fuzzing -----------------------------------------------------------------------------


def parses_canonically_or_rejects(data: bytes) -> None:
    try:
        frame = decode_stream_frame(data)
    except RemoteProtocolError:
        return
    # every accepted payload is the unique encoding of its frame
    assert encode_stream_frame(frame, len(data)) == data


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
def test_fuzz_arbitrary_payloads(data: bytes) -> None:
    parses_canonically_or_rejects(data)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.integers(0, 6),
    body=st.binary(max_size=40),
    padding=st.lists(st.integers(0, 255), max_size=4).map(bytes) | st.just(b""),
)
def test_fuzz_typed_payloads(kind: int, body: bytes, padding: bytes) -> None:
    parses_canonically_or_rejects(bytes([kind]) + body + padding)


FRAME_STRATEGY = st.one_of(
    st.just(PaddingFrame()),
    st.builds(OpenFrame, st.integers(0, 2**32 - 1), st.text(max_size=60)),
    st.builds(
        DataFrame,
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**64 - 1),
        st.binary(max_size=MAX_DATA),
        st.booleans(),
    ),
    st.builds(
        AckFrame, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)
    ),
    st.builds(ResetFrame, st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF)),
)


@settings(max_examples=300, deadline=None)
@given(FRAME_STRATEGY)
def test_fuzz_round_trip(frame: StreamFrame) -> None:
    data = encode_stream_frame(frame, PAYLOAD)
    assert decode_stream_frame(data) == frame
