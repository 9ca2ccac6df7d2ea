"""The shaped message: a piece of the link's frame stream and cover, at a size chosen
by the profile, not by the frames.

Wire format (one data-channel message, exactly one such frame)::

    u8 SHAPED (16) | u24 body length | u24 data length | data | cover

``data`` is the next piece of the link's byte stream of ordinary frames
(:mod:`zmesh.link.frames`), cut anywhere: a frame may start in one shaped message and end
in a later one, so that every message can have the size the profile asks for, whatever
frames wait.  ``cover`` is zeros, ignored.  Type 16 is no ordinary frame type (the frame
decoder rejects it), so an unshaped message never starts with it and a shaped stream
cannot nest.

The receiving side (:class:`Deshaper`, one per link, always on: a node shapes only what it
sends) turns shaped messages back into messages of whole frames for the link's decoder;
unshaped messages pass through untouched.  Its buffer holds at most one partial frame
(at most :data:`MAX_FRAME` bytes): a declared frame length beyond that is a protocol error.
"""

from ..errors import CloseCode, RemoteProtocolError
from ..link import frames as lf

SHAPED = lf.SHAPED  # the shaped message's type byte
HEADER = lf.FRAME_HEADER + 3  # type, body length, data length
MIN_MESSAGE = HEADER  # a message of cover only, with no data
MAX_MESSAGE = lf.MAX_BATCH  # the largest shaped message (64 KiB: every data channel takes it)
#: the largest ordinary frame (a PADDING frame of MAX_PADDING bytes is the largest type)
MAX_FRAME = lf.FRAME_HEADER + lf.MAX_PADDING


def shaped_message(data: bytes | memoryview, size: int) -> bytes:
    """One shaped message of exactly ``size`` bytes carrying ``data`` (the rest cover).

    Raises ValueError if ``size`` is outside MIN_MESSAGE..MAX_MESSAGE or ``data`` does not
    fit."""
    if not MIN_MESSAGE <= size <= MAX_MESSAGE:
        raise ValueError(f"shaped message size {size} outside {MIN_MESSAGE}..{MAX_MESSAGE}")
    room = size - HEADER
    if len(data) > room:
        raise ValueError(f"{len(data)} bytes of data in a message with room for {room}")
    head = bytes([SHAPED]) + (size - lf.FRAME_HEADER).to_bytes(3, "big")
    return b"".join((head, len(data).to_bytes(3, "big"), data, bytes(room - len(data))))


class Deshaper:
    """One link's receiving side: shaped messages in, messages of whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()  # the stream's bytes not yet part of a whole frame

    def unwrap(self, message: bytes) -> bytes:
        """The whole ordinary frames that ``message`` completes, concatenated (b"" if
        none yet); an unshaped message comes back as it is.

        Raises RemoteProtocolError on a malformed shaped message, on an unshaped message
        while a frame is still incomplete, and on a frame length over MAX_FRAME."""
        if not message or message[0] != SHAPED:
            if self._buf:
                raise RemoteProtocolError("unshaped link message inside a shaped frame")
            return message
        if len(message) < HEADER:
            raise RemoteProtocolError(f"shaped message of {len(message)} bytes")
        body = int.from_bytes(message[1:4], "big")
        data = int.from_bytes(message[4:7], "big")
        if body != len(message) - lf.FRAME_HEADER or data > len(message) - HEADER:
            raise RemoteProtocolError("shaped message lengths do not match its size")
        buf = self._buf
        if not buf:  # the common case: nothing pending; cut in place
            src: bytes | bytearray = message[HEADER : HEADER + data]
        else:
            buf += message[HEADER : HEADER + data]
            src = buf
        end = self._whole(src)
        out = bytes(src[:end])
        if src is buf:
            del buf[:end]
        else:
            buf += src[end:]
        return out

    @staticmethod
    def _whole(src: bytes | bytearray) -> int:
        """The length of the longest prefix of ``src`` made of whole frames.

        Raises RemoteProtocolError on a frame length over MAX_FRAME."""
        pos, size = 0, len(src)
        while size - pos >= lf.FRAME_HEADER:
            length = lf.FRAME_HEADER + int.from_bytes(src[pos + 1 : pos + 4], "big")
            if length > MAX_FRAME:
                raise RemoteProtocolError(f"link frame of {length} bytes", CloseCode.PROTOCOL)
            if pos + length > size:
                break
            pos += length
        return pos

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held (at most MAX_FRAME + a message)."""
        return len(self._buf)
