"""Shaped messages and the Deshaper (zmesh/shaping/carrier.py): round trip, any split of
the frame stream across messages, fuzz, and the limits."""

import random

import pytest
from helpers import splits
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.errors import RemoteProtocolError
from zmesh.link import frames as lf
from zmesh.onion.geometry import DEFAULT_GEOMETRY
from zmesh.shaping.carrier import (
    HEADER,
    MAX_FRAME,
    MAX_MESSAGE,
    MIN_MESSAGE,
    SHAPED,
    Deshaper,
    shaped_message,
)

SAMPLE_FRAMES: list[lf.Frame] = [
    lf.Credit(256),
    lf.Destroy(7, lf.CloseCode.PROTOCOL),
    lf.Created(9, bytes(DEFAULT_GEOMETRY.created_size)),
    lf.Cell(9, bytes(range(256)) * (DEFAULT_GEOMETRY.cell_size // 256)),
    lf.Ping(3),
    lf.Padding(0),
    lf.Padding(lf.MAX_PADDING),
    lf.Create(11, 1, bytes(DEFAULT_GEOMETRY.header_size)),
]
STREAM = b"".join(lf.encode_frame(f) for f in SAMPLE_FRAMES)


def decode(data: bytes) -> list[lf.Frame]:
    return lf.FrameDecoder(DEFAULT_GEOMETRY).feed_message(data)


def test_message_layout() -> None:
    msg = shaped_message(b"abc", 20)
    assert len(msg) == 20
    assert msg[0] == SHAPED == lf.SHAPED
    assert int.from_bytes(msg[1:4], "big") == 16
    assert int.from_bytes(msg[4:7], "big") == 3
    assert msg[7:10] == b"abc" and msg[10:] == bytes(10)
    assert shaped_message(b"", MIN_MESSAGE) == bytes([SHAPED, 0, 0, 3, 0, 0, 0])


def test_message_size_limits() -> None:
    with pytest.raises(ValueError, match="outside"):
        shaped_message(b"", MIN_MESSAGE - 1)
    with pytest.raises(ValueError, match="outside"):
        shaped_message(b"", MAX_MESSAGE + 1)
    with pytest.raises(ValueError, match="room"):
        shaped_message(b"x" * 14, 20)
    assert len(shaped_message(b"x" * (MAX_MESSAGE - HEADER), MAX_MESSAGE)) == MAX_MESSAGE


def test_round_trip_whole() -> None:
    d = Deshaper()
    out = d.unwrap(shaped_message(STREAM[:60000], MAX_MESSAGE))
    out += d.unwrap(shaped_message(STREAM[60000:], len(STREAM) - 60000 + HEADER + 5))
    assert decode(out) == SAMPLE_FRAMES
    assert d.buffered == 0


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_chunk", [1, 7, 100, 9000])
def test_any_split(seed: int, max_chunk: int) -> None:
    """The stream cut anywhere (empty pieces too): each unwrap gives whole frames, and
    together they are the stream."""
    d = Deshaper()
    got = []
    for piece in splits(STREAM, random.Random(seed), max_chunk):
        out = d.unwrap(shaped_message(piece, len(piece) + HEADER + seed))
        got += decode(out)  # always whole frames
    assert got == SAMPLE_FRAMES
    assert d.buffered == 0


def test_unshaped_passes_through() -> None:
    d = Deshaper()
    frame = lf.encode_frame(lf.Credit(1))
    assert d.unwrap(frame) is frame
    assert d.unwrap(b"") == b""
    d.unwrap(shaped_message(frame[:3], 20))  # a frame begun
    with pytest.raises(RemoteProtocolError, match="unshaped"):
        d.unwrap(frame)


@pytest.mark.parametrize(
    "message",
    [
        bytes([SHAPED]),  # too short
        bytes([SHAPED, 0, 0, 3, 0, 0]),
        bytes([SHAPED, 0, 0, 4, 0, 0, 0]),  # body length says 4, is 3
        bytes([SHAPED, 0, 0, 3, 0, 0, 1]),  # data length beyond the message
        bytes([SHAPED, 0, 0, 5, 0, 0, 3, 1, 2]),
    ],
)
def test_malformed(message: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        Deshaper().unwrap(message)


def test_attack_frame_length() -> None:
    """A frame declaring more than the largest frame is refused at once, not buffered."""
    d = Deshaper()
    head = bytes([lf.FrameType.PADDING]) + (MAX_FRAME - lf.FRAME_HEADER).to_bytes(3, "big")
    assert d.unwrap(shaped_message(head, 64)) == b""  # the largest frame: waited for
    assert d.buffered == 4
    evil = bytes([lf.FrameType.PADDING]) + (MAX_FRAME - lf.FRAME_HEADER + 1).to_bytes(3, "big")
    with pytest.raises(RemoteProtocolError, match="link frame of"):
        Deshaper().unwrap(shaped_message(evil, 64))
    with pytest.raises(RemoteProtocolError, match="link frame of"):
        Deshaper().unwrap(shaped_message(b"\x06\xff\xff\xff", 64))


def test_nested_shaped_is_refused_by_the_decoder() -> None:
    inner = shaped_message(b"", MIN_MESSAGE)
    out = Deshaper().unwrap(shaped_message(inner, 40))
    assert out == inner
    with pytest.raises(RemoteProtocolError, match="unknown link frame type 16"):
        decode(out)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=300), max_size=8))
@example([bytes([SHAPED, 0, 0, 3, 0, 0, 0])])
@example([bytes([SHAPED, 0, 0, 7, 0, 0, 4, 6, 0, 0])])
def test_fuzz(messages: list[bytes]) -> None:
    """Any input unwraps to whole frames or raises RemoteProtocolError; nothing else, and
    the buffer stays bounded."""
    d = Deshaper()
    for m in messages:
        try:
            out = d.unwrap(m)
        except RemoteProtocolError:
            return
        assert d.buffered < MAX_FRAME
        if m and m[0] == SHAPED:  # what comes out is cut at frame boundaries
            assert Deshaper._whole(out) == len(out)


@settings(max_examples=200)
@given(st.lists(st.integers(0, 3000), min_size=1, max_size=40), st.integers(0, 50))
def test_fuzz_cuts(cuts: list[int], pad: int) -> None:
    """Frames cut at arbitrary points into messages with arbitrary cover."""
    d = Deshaper()
    got: list[lf.Frame] = []
    pos = 0
    for n in cuts:
        piece = STREAM[pos : pos + n]
        pos += len(piece)
        got += decode(d.unwrap(shaped_message(piece, len(piece) + HEADER + pad)))
    while pos < len(STREAM):
        piece = STREAM[pos : pos + 60000]
        pos += len(piece)
        got += decode(d.unwrap(shaped_message(piece, len(piece) + HEADER)))
    assert got == SAMPLE_FRAMES
