"""Stream frames: one frame per cell payload, zero-padded to the payload size.

Offsets are end-to-end byte positions (as in QUIC), not per-hop sequence numbers, so a
stream's bytes can arrive over several circuits and still reassemble::

    PADDING  u8 0
    OPEN     u8 1 | u32 stream | u8 len | target
    DATA     u8 2 | u32 stream | u64 offset | u8 flags (1 = FIN) | u16 len | data
    ACK      u8 3 | u32 stream | u64 received | u64 max_data | u8 flags (1 = FIN received)
    RESET    u8 4 | u32 stream | u16 code
    CONNECTED u8 5 | u32 stream   (the endpoint reached the stream's target)
"""

from dataclasses import dataclass
from enum import IntEnum

from ..codec import Buffer
from ..errors import RemoteProtocolError

DATA_OVERHEAD = 16
MAX_TARGET = 255
FLAG_FIN = 1


class StreamFrameType(IntEnum):
    PADDING = 0
    OPEN = 1
    DATA = 2
    ACK = 3
    RESET = 4
    CONNECTED = 5


@dataclass(frozen=True, slots=True)
class PaddingFrame:
    pass


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


StreamFrame = PaddingFrame | OpenFrame | DataFrame | AckFrame | ResetFrame | ConnectedFrame


def encode_stream_frame(frame: StreamFrame, payload_size: int) -> bytes:
    """Serialize ``frame`` and zero-pad it to ``payload_size``; ValueError if it won't fit."""
    match frame:
        case PaddingFrame():
            body = bytes([StreamFrameType.PADDING])
        case OpenFrame(sid, target):
            raw = target.encode()
            if len(raw) > MAX_TARGET:
                raise ValueError("stream target too long")
            body = bytes([StreamFrameType.OPEN]) + sid.to_bytes(4, "big") + bytes([len(raw)]) + raw
        case DataFrame(sid, offset, data, fin):
            body = b"".join(
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
            body = (
                bytes([StreamFrameType.ACK])
                + sid.to_bytes(4, "big")
                + received.to_bytes(8, "big")
                + max_data.to_bytes(8, "big")
                + bytes([FLAG_FIN if fin else 0])
            )
        case ResetFrame(sid, code):
            body = bytes([StreamFrameType.RESET]) + sid.to_bytes(4, "big") + code.to_bytes(2, "big")
        case ConnectedFrame(sid):
            body = bytes([StreamFrameType.CONNECTED]) + sid.to_bytes(4, "big")
    if len(body) > payload_size:
        raise ValueError("stream frame larger than the cell payload")
    return body + bytes(payload_size - len(body))


def decode_stream_frame(payload: bytes) -> StreamFrame:
    """Parse one frame; the rest of the payload must be zero padding.

    Raises RemoteProtocolError on anything malformed.
    """
    buf = Buffer(payload)
    raw_type = buf.pull_uint8()
    frame: StreamFrame
    if raw_type == StreamFrameType.PADDING:
        frame = PaddingFrame()
    elif raw_type == StreamFrameType.OPEN:
        sid = buf.pull_uint32()
        try:
            target = buf.pull_vector(1, MAX_TARGET).decode()
        except UnicodeDecodeError:
            raise RemoteProtocolError("stream target is not UTF-8") from None
        frame = OpenFrame(sid, target)
    elif raw_type == StreamFrameType.DATA:
        sid, offset, flags = buf.pull_uint32(), buf.pull_uint64(), buf.pull_uint8()
        if flags & ~FLAG_FIN:
            raise RemoteProtocolError("unknown DATA flags")
        frame = DataFrame(sid, offset, buf.pull_vector(2, 65535), bool(flags & FLAG_FIN))
    elif raw_type == StreamFrameType.ACK:
        sid, received, max_data, flags = (
            buf.pull_uint32(),
            buf.pull_uint64(),
            buf.pull_uint64(),
            buf.pull_uint8(),
        )
        if flags & ~FLAG_FIN:
            raise RemoteProtocolError("unknown ACK flags")
        frame = AckFrame(sid, received, max_data, bool(flags & FLAG_FIN))
    elif raw_type == StreamFrameType.RESET:
        frame = ResetFrame(buf.pull_uint32(), buf.pull_uint16())
    elif raw_type == StreamFrameType.CONNECTED:
        frame = ConnectedFrame(buf.pull_uint32())
    else:
        raise RemoteProtocolError(f"unknown stream frame type {raw_type}")
    if any(buf.pull_rest()):
        raise RemoteProtocolError("non-zero bytes after a stream frame")
    return frame
