"""A pure-Python binary buffer with pull/push helpers, after aioquic's ``Buffer``.

Reading past the end raises :class:`BufferReadError`, a :class:`RemoteProtocolError`,
because every buffer we pull from holds bytes a peer sent.
"""

from .errors import RemoteProtocolError


class BufferReadError(RemoteProtocolError):
    """The input ended before a field did."""


class Buffer:
    """A read cursor over immutable bytes."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def eof(self) -> bool:
        return self._pos >= len(self._data)

    def pull_bytes(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise BufferReadError("truncated input")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def pull_uint(self, size: int) -> int:
        return int.from_bytes(self.pull_bytes(size), "big")

    def pull_uint8(self) -> int:
        return self.pull_uint(1)

    def pull_uint16(self) -> int:
        return self.pull_uint(2)

    def pull_uint32(self) -> int:
        return self.pull_uint(4)

    def pull_uint64(self) -> int:
        return self.pull_uint(8)

    def pull_vector(self, length_size: int, max_len: int) -> bytes:
        """Pull a length-prefixed byte string, rejecting lengths above ``max_len``."""
        n = self.pull_uint(length_size)
        if n > max_len:
            raise RemoteProtocolError(f"field of {n} bytes exceeds the limit of {max_len}")
        return self.pull_bytes(n)

    def pull_rest(self) -> bytes:
        return self.pull_bytes(self.remaining)

    def expect_eof(self) -> None:
        if not self.eof():
            raise RemoteProtocolError(f"{self.remaining} unexpected trailing bytes")


def push_uint(value: int, size: int) -> bytes:
    return value.to_bytes(size, "big")


def push_vector(data: bytes, length_size: int) -> bytes:
    return len(data).to_bytes(length_size, "big") + data
