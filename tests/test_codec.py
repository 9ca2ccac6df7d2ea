"""The binary read buffer and push helpers (zmesh/codec.py)."""

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zmesh.codec import Buffer, BufferReadError, push_uint, push_vector
from zmesh.errors import RemoteProtocolError


def test_buffer_read_error_is_a_remote_protocol_error() -> None:
    assert issubclass(BufferReadError, RemoteProtocolError)


def test_pull_fields_in_order() -> None:
    data = b"\x01" + b"\x02\x03" + b"\x04\x05\x06\x07" + bytes(range(8, 16)) + b"tail"
    buf = Buffer(data)
    assert buf.remaining == len(data)
    assert buf.pull_uint8() == 0x01
    assert buf.pull_uint16() == 0x0203
    assert buf.pull_uint32() == 0x04050607
    assert buf.pull_uint64() == int.from_bytes(bytes(range(8, 16)), "big")
    assert not buf.eof()
    assert buf.pull_rest() == b"tail"
    assert buf.eof()
    assert buf.remaining == 0
    buf.expect_eof()
    assert buf.pull_rest() == b""
    assert buf.pull_bytes(0) == b""


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_pull_uint_truncated(size: int) -> None:
    for n in range(size):
        with pytest.raises(BufferReadError, match="truncated"):
            Buffer(bytes(n)).pull_uint(size)


def test_failed_pull_consumes_nothing() -> None:
    buf = Buffer(b"abc")
    with pytest.raises(BufferReadError):
        buf.pull_bytes(4)
    assert buf.remaining == 3
    assert buf.pull_bytes(3) == b"abc"


def test_negative_length_is_rejected() -> None:
    buf = Buffer(b"abc")
    with pytest.raises(BufferReadError):
        buf.pull_bytes(-1)
    assert buf.remaining == 3


def test_vector_round_trip_and_limits() -> None:
    for length_size in (1, 2, 3):
        for data in (b"", b"x", bytes(255)):
            buf = Buffer(push_vector(data, length_size) + b"!")
            assert buf.pull_vector(length_size, 255) == data
            assert buf.pull_rest() == b"!"
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        Buffer(push_vector(b"abcd", 2)).pull_vector(2, 3)
    assert Buffer(push_vector(b"abc", 2)).pull_vector(2, 3) == b"abc"
    with pytest.raises(BufferReadError):
        Buffer(push_vector(b"abcd", 2)[:-1]).pull_vector(2, 10)
    with pytest.raises(BufferReadError):
        Buffer(b"\x00").pull_vector(2, 10)  # the length itself is cut short


def test_expect_eof_rejects_trailing_bytes() -> None:
    buf = Buffer(b"ab")
    buf.pull_uint8()
    with pytest.raises(RemoteProtocolError, match="1 unexpected trailing"):
        buf.expect_eof()


def test_push_uint() -> None:
    assert push_uint(0x0102, 2) == b"\x01\x02"
    assert push_uint(0, 4) == bytes(4)
    assert push_uint(2**64 - 1, 8) == b"\xff" * 8
    with pytest.raises(OverflowError):
        push_uint(256, 1)


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**64 - 1)),
            st.binary(max_size=40),
        )
    )
)
def test_fuzz_round_trip(fields: list[tuple[int, int] | bytes]) -> None:
    encoded = []
    for f in fields:
        if isinstance(f, bytes):
            encoded.append(push_vector(f, 2))
        else:
            size, value = f
            encoded.append(push_uint(value % 256**size, size))
    buf = Buffer(b"".join(encoded))
    for f in fields:
        if isinstance(f, bytes):
            assert buf.pull_vector(2, 40) == f
        else:
            size, value = f
            assert buf.pull_uint(size) == value % 256**size
    buf.expect_eof()


@settings(max_examples=200)
@given(st.binary(max_size=40), st.lists(st.integers(-2, 12), max_size=10))
@example(b"", [0])
@example(b"", [1])
@example(b"\x00\x05abcd", [-1])
def test_fuzz_pulls_raise_only_remote_errors(data: bytes, ops: list[int]) -> None:
    buf = Buffer(data)
    for op in ops:
        before = buf.remaining
        try:
            if op == -1:
                buf.pull_vector(2, 4)
            elif op == -2:
                buf.expect_eof()
            else:
                assert len(buf.pull_bytes(op)) == op
        except RemoteProtocolError:
            continue
        assert 0 <= buf.remaining <= before
