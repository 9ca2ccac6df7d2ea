"""Stream frames, packed back to back in a cell payload and zero-padded (a cell builder,
after aioquic's packet builder).

Offsets are end-to-end byte positions (as in QUIC), not per-hop sequence numbers, so a
stream's bytes can arrive over several circuits and still reassemble::

    PADDING   u8 0  (it and everything after it are zeros: the end of the cell)
    OPEN      u8 1 | u32 stream | u8 len | target
    DATA      u8 2 | u32 stream | u64 offset | u8 flags (1 = FIN) | u16 len | data
    ACK       u8 3 | u32 stream | u64 received | u64 max_data | u8 flags (1 = FIN received)
    RESET     u8 4 | u32 stream | u16 code
    CONNECTED u8 5 | u32 stream   (the endpoint reached the stream's target)
    LINK      u8 6 | 16-byte session token | u8 (leg number < 128) | (128 if RESUME)
              (binds a circuit to a session; RESUME: the client's session has had a
              working leg, so the final hop must know it already)
    PING      u8 7 | u64 nonce
    PONG      u8 8 | u64 nonce    (answers the PING with that nonce, on the same circuit)

A payload holding one frame and zeros (what zMesh sent before several frames fit in a
cell) decodes to that one frame, so old and new senders interoperate.
"""

from dataclasses import dataclass
from enum import IntEnum

from ..codec import Buffer
from ..errors import RemoteProtocolError

DATA_OVERHEAD = 16
MAX_TARGET = 255
FLAG_FIN = 1
TOKEN_SIZE = 16
LINK_RESUME = 0x80
MAX_LEG_NUMBER = LINK_RESUME


class StreamFrameType(IntEnum):
    PADDING = 0
    OPEN = 1
    DATA = 2
    ACK = 3
    RESET = 4
    CONNECTED = 5
    LINK = 6
    PING = 7
    PONG = 8


@dataclass(frozen=True, slots=True)
class PaddingFrame:
    """No content: encodes to nothing, since the zeros after the last frame are padding."""


@dataclass(frozen=True, slots=True)
class OpenFrame:
    stream_id: int
    target: str


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    offset: int
    data: bytes
    fin: bool = False


@dataclass(frozen=True, slots=True)
class AckFrame:
    stream_id: int
    received: int
    max_data: int
    fin: bool = False


@dataclass(frozen=True, slots=True)
class ResetFrame:
    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class ConnectedFrame:
    stream_id: int


@dataclass(frozen=True, slots=True)
class LinkFrame:
    """Binds the circuit it arrives on to the session named by ``token`` (final hop)."""

    token: bytes
    leg: int
    resume: bool = False


@dataclass(frozen=True, slots=True)
class PingFrame:
    nonce: int


@dataclass(frozen=True, slots=True)
class PongFrame:
    nonce: int


StreamFrame = (
    PaddingFrame
    | OpenFrame
    | DataFrame
    | AckFrame
    | ResetFrame
    | ConnectedFrame
    | LinkFrame
    | PingFrame
    | PongFrame
)


def encode_frame(frame: StreamFrame) -> bytes:
    """Serialize one frame without padding; ValueError if a field is out of range."""
    match frame:
        case PaddingFrame():
            return b""
        case OpenFrame(sid, target):
            raw = target.encode()
            if len(raw) > MAX_TARGET:
                raise ValueError("stream target too long")
            return bytes([StreamFrameType.OPEN]) + sid.to_bytes(4, "big") + bytes([len(raw)]) + raw
        case DataFrame(sid, offset, data, fin):
            return b"".join(
                (
                    bytes([StreamFrameType.DATA]),
                    sid.to_bytes(4, "big"),
                    offset.to_bytes(8, "big"),
                    bytes([FLAG_FIN if fin else 0]),
                    len(data).to_bytes(2, "big"),
                    data,
                )
            )
        case AckFrame(sid, received, max_data, fin):
            return (
                bytes([StreamFrameType.ACK])
                + sid.to_bytes(4, "big")
                + received.to_bytes(8, "big")
                + max_data.to_bytes(8, "big")
                + bytes([FLAG_FIN if fin else 0])
            )
        case ResetFrame(sid, code):
            return bytes([StreamFrameType.RESET]) + sid.to_bytes(4, "big") + code.to_bytes(2, "big")
        case ConnectedFrame(sid):
            return bytes([StreamFrameType.CONNECTED]) + sid.to_bytes(4, "big")
        case LinkFrame(token, leg, resume):
            if len(token) != TOKEN_SIZE:
                raise ValueError("a session token is 16 bytes")
            if not 0 <= leg < MAX_LEG_NUMBER:
                raise ValueError(f"a leg number is below {MAX_LEG_NUMBER}")
            return bytes([StreamFrameType.LINK]) + token + bytes([leg | (LINK_RESUME * resume)])
        case PingFrame(nonce):
            return bytes([StreamFrameType.PING]) + nonce.to_bytes(8, "big")
        case PongFrame(nonce):
            return bytes([StreamFrameType.PONG]) + nonce.to_bytes(8, "big")


class CellBuilder:
    """Fills one cell payload with frames, back to back.

    ``add`` refuses a frame that does not fit in the ``room`` left, so a sender can put
    its control frames first and then a DATA frame of ``room - DATA_OVERHEAD`` bytes.
    """

    __slots__ = ("_parts", "frames", "payload_size", "room")

    def __init__(self, payload_size: int) -> None:
        self.payload_size = payload_size
        self.room = payload_size
        self.frames: list[StreamFrame] = []
        self._parts: list[bytes] = []

    def add(self, frame: StreamFrame) -> bool:
        """Append ``frame`` if it fits; ValueError if a field is out of range."""
        body = encode_frame(frame)
        if len(body) > self.room:
            return False
        self._parts.append(body)
        self.frames.append(frame)
        self.room -= len(body)
        return True

    @property
    def empty(self) -> bool:
        return not self.frames

    def payload(self) -> bytes:
        """The frames so far, zero-padded to the payload size."""
        return b"".join(self._parts) + bytes(self.room)


def encode_stream_frames(frames: list[StreamFrame], payload_size: int) -> bytes:
    """Pack ``frames`` back to back and zero-pad to ``payload_size``.

    Raises ValueError if they do not fit or a field is out of range.
    """
    builder = CellBuilder(payload_size)
    for frame in frames:
        if not builder.add(frame):
            raise ValueError("stream frames larger than the cell payload")
    return builder.payload()


def _pull_frame(buf: Buffer, raw_type: int) -> StreamFrame:
    if raw_type == StreamFrameType.OPEN:
        sid = buf.pull_uint32()
        try:
            target = buf.pull_vector(1, MAX_TARGET).decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError("stream target is not UTF-8") from None
        return OpenFrame(sid, target)
    if raw_type == StreamFrameType.DATA:
        sid, offset, flags = buf.pull_uint32(), buf.pull_uint64(), buf.pull_uint8()
        if flags & ~FLAG_FIN:
            raise RemoteProtocolError("unknown DATA flags")
        return DataFrame(sid, offset, buf.pull_vector(2, 65535), bool(flags & FLAG_FIN))
    if raw_type == StreamFrameType.ACK:
        sid, received, max_data, flags = (
            buf.pull_uint32(),
            buf.pull_uint64(),
            buf.pull_uint64(),
            buf.pull_uint8(),
        )
        if flags & ~FLAG_FIN:
            raise RemoteProtocolError("unknown ACK flags")
        return AckFrame(sid, received, max_data, bool(flags & FLAG_FIN))
    if raw_type == StreamFrameType.RESET:
        return ResetFrame(buf.pull_uint32(), buf.pull_uint16())
    if raw_type == StreamFrameType.CONNECTED:
        return ConnectedFrame(buf.pull_uint32())
    if raw_type == StreamFrameType.LINK:
        token, leg = buf.pull_bytes(TOKEN_SIZE), buf.pull_uint8()
        return LinkFrame(token, leg & ~LINK_RESUME, bool(leg & LINK_RESUME))
    if raw_type == StreamFrameType.PING:
        return PingFrame(buf.pull_uint64())
    if raw_type == StreamFrameType.PONG:
        return PongFrame(buf.pull_uint64())
    raise RemoteProtocolError(f"unknown stream frame type {raw_type}")


def decode_stream_frames(payload: bytes) -> list[StreamFrame]:
    """Parse the frames of one cell payload, up to a PADDING byte or the end.

    Everything from the PADDING byte on must be zeros.  Raises RemoteProtocolError on
    anything malformed.
    """
    buf = Buffer(payload)
    frames: list[StreamFrame] = []
    while not buf.eof():
        raw_type = buf.pull_uint8()
        if raw_type == StreamFrameType.PADDING:
            if any(buf.pull_rest()):
                raise RemoteProtocolError("non-zero bytes after a stream frame")
            break
        frames.append(_pull_frame(buf, raw_type))
    return frames


def first_link(frames: list[StreamFrame]) -> LinkFrame | None:
    """The LINK that ``frames`` (one cell) begin with, else None.

    The final hop calls it on the first cell of a circuit to find the session to route
    the circuit to.
    """
    if frames and isinstance(frames[0], LinkFrame):
        return frames[0]
    return None
