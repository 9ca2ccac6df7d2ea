"""Link frames: ``u8 type | u24 length | body``, several to a link message.

A link message (one data-channel message) carries one or more whole frames, back to
back: the sender packs the frames it has ready into messages of at most
:data:`SEND_BATCH` bytes (:func:`pack_frames`, docs/decisions.md D47, D56; a receiver takes
up to :data:`MAX_BATCH`), and the receiver
decodes each message on its own (:meth:`FrameDecoder.feed_message`): a message that ends
inside a frame, like one whose frame lengths lie, is a protocol error.  (A peer that
sends one frame per message, as before D47, sends such messages too.)  The decoder also
accepts bytes in any split (:meth:`FrameDecoder.feed`, for a byte stream) and yields
typed frames.  Every fixed-size body length is exact for its type, derived
from the onion :class:`~zmesh.onion.geometry.Geometry`; the few variable-size types
(PADDING, DESCRIPTOR, SIGNAL, DHT) have a maximum.  A frame can never be oversized.

Bodies::

    HELLO1      u8 version | identity keys | X-Wing ct          (the handshake, see handshake.py)
    CREATE      u32 circ | u32 epoch | setup header
    CREATED     u32 circ | reply
    CELL        u32 circ | cell
    DESTROY     u32 circ | u8 code
    CLOSE       u8 code
    PADDING     zero or more bytes, ignored
    CREDIT      u32 frames: the sender may send that many more frames (link flow control)
    DESCRIPTOR  a signed node descriptor (gossip)
    SIGNAL      origin id[32] | target id[32] | u8 ttl | payload (signaling, relayed)
    DHT         one DHT message (zmesh/dht/messages.py), at most MAX_DHT bytes
    PING        u32 seq: a heartbeat; answered by PONG with the same seq (link health)
    PONG        u32 seq
"""

from dataclasses import dataclass
from enum import IntEnum

from ..codec import Buffer
from ..crypto import signing, xwing
from ..errors import CloseCode, RemoteProtocolError
from ..onion.geometry import Geometry

LINK_VERSION = 1
MAC_SIZE = 32
FRAME_HEADER = 4
IDENTITY_KEYS_SIZE = xwing.PUBLIC_KEY_SIZE + signing.PUBLIC_KEY_SIZE
MAX_PADDING = 65536
MAX_DESCRIPTOR = 8192
MAX_SIGNAL_PAYLOAD = 16384  # signaling's MAX_MESSAGE: an offer with its descriptor fits
MAX_DHT = 56 * 1024  # a DHT message: at least zmesh.dht.messages.MAX_MESSAGE_SIZE
NODE_ID = 32
#: the largest batch of frames in one link message (D47): RFC 8841's default
#: ``max-message-size``, which every data channel takes (zMesh's SDP offers 256 KiB), and
#: small enough that a relay, which forwards a message only once it has all of it, adds
#: little delay on a slow link (64 KiB: 5 ms per hop at 100 Mbit/s, 52 ms at 10 Mbit/s)
MAX_BATCH = 65536
#: the batches a node sends (D56): three 8 KiB cells to a message, 26 ms of store and
#: forward per hop at 10 Mbit/s; 64 KiB batches (52 ms per hop, 0.2 s over a circuit's
#: four links) lengthened the heal simulation's failover stalls, 32 KiB did not
SEND_BATCH = 32 * 1024


class FrameType(IntEnum):
    HELLO1 = 1
    HELLO2 = 2
    HELLO3 = 3
    CREATE = 4
    CREATED = 5
    CELL = 6
    DESTROY = 7
    CLOSE = 8
    PADDING = 9
    CREDIT = 10
    DESCRIPTOR = 11
    SIGNAL = 12
    DHT = 15
    PING = 13
    PONG = 14


#: not a frame type: the type byte of a shaped message (zmesh.shaping.carrier), which the
#: receiving node unwraps before this decoder sees the frames inside it
SHAPED = 16


@dataclass(frozen=True, slots=True)
class Hello1:
    """Initiator to responder: who I am, and a ciphertext to your identity key."""

    identity_keys: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class Hello2:
    """Responder to initiator: a ciphertext to your identity key, and my confirmation."""

    ciphertext: bytes
    mac: bytes


@dataclass(frozen=True, slots=True)
class Hello3:
    mac: bytes


@dataclass(frozen=True, slots=True)
class Create:
    circ_id: int
    epoch: int
    header: bytes


@dataclass(frozen=True, slots=True)
class Created:
    circ_id: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class Cell:
    circ_id: int
    cell: bytes


@dataclass(frozen=True, slots=True)
class Destroy:
    circ_id: int
    code: CloseCode


@dataclass(frozen=True, slots=True)
class Close:
    code: CloseCode


@dataclass(frozen=True, slots=True)
class Padding:
    length: int


@dataclass(frozen=True, slots=True)
class Credit:
    frames: int


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int


@dataclass(frozen=True, slots=True)
class Pong:
    seq: int


@dataclass(frozen=True, slots=True)
class DescriptorFrame:
    data: bytes


@dataclass(frozen=True, slots=True)
class Signal:
    origin: bytes
    target: bytes
    ttl: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class DhtFrame:
    """One DHT message (decoded by :mod:`zmesh.dht.messages`, not here)."""

    data: bytes


Frame = (
    Hello1
    | Hello2
    | Hello3
    | Create
    | Created
    | Cell
    | Destroy
    | Close
    | Padding
    | Credit
    | DescriptorFrame
    | Signal
    | DhtFrame
    | Ping
    | Pong
)


def _code(value: int) -> CloseCode:
    try:
        return CloseCode(value)
    except ValueError:
        return CloseCode.PROTOCOL


def encode_frame(frame: Frame) -> bytes:
    """Serialize one frame."""
    match frame:  # the per-cell frames first: they are nearly all the traffic
        case Cell(circ, cell):
            return encode_cell(circ, cell)
        case Create(circ, epoch, header):
            return _frame(
                FrameType.CREATE, circ.to_bytes(4, "big") + epoch.to_bytes(4, "big"), header
            )
        case Created(circ, reply):
            return _frame(FrameType.CREATED, circ.to_bytes(4, "big"), reply)
        case Hello1(keys, ct):
            kind, body = FrameType.HELLO1, bytes([LINK_VERSION]) + keys + ct
        case Hello2(ct, mac):
            kind, body = FrameType.HELLO2, ct + mac
        case Hello3(mac):
            kind, body = FrameType.HELLO3, mac
        case Destroy(circ, code):
            kind, body = FrameType.DESTROY, circ.to_bytes(4, "big") + bytes([code])
        case Close(code):
            kind, body = FrameType.CLOSE, bytes([code])
        case Padding(length):
            kind, body = FrameType.PADDING, bytes(length)
        case Credit(n):
            kind, body = FrameType.CREDIT, n.to_bytes(4, "big")
        case DescriptorFrame(data):
            kind, body = FrameType.DESCRIPTOR, data
        case Signal(origin, target, ttl, payload):
            kind, body = FrameType.SIGNAL, origin + target + bytes([ttl]) + payload
        case DhtFrame(data):
            kind, body = FrameType.DHT, data
        case Ping(seq):
            kind, body = FrameType.PING, seq.to_bytes(4, "big")
        case Pong(seq):
            kind, body = FrameType.PONG, seq.to_bytes(4, "big")
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def encode_cell(circ_id: int, cell: bytes) -> bytes:
    """``encode_frame(Cell(circ_id, cell))`` without building the frame: the relay hot path."""
    return _frame(FrameType.CELL, circ_id.to_bytes(4, "big"), cell)


def pack_frames(frames: list[bytes], limit: int = MAX_BATCH) -> list[bytes]:
    """Encoded frames, in order, packed into as few messages of at most ``limit`` bytes as
    a greedy fill gives; a frame is never split, and a message of one frame is that frame
    (no copy).  A frame over ``limit`` goes alone (none is: every frame fits in 64 KiB
    plus its header)."""
    if len(frames) < 2:
        return frames
    out: list[bytes] = []
    run: list[bytes] = []
    size = 0
    for frame in frames:
        if size + len(frame) > limit and run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run, size = [], 0
        run.append(frame)
        size += len(frame)
    out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def _frame(kind: FrameType, fields: bytes, payload: bytes) -> bytes:
    """``kind | length | fields | payload`` with one copy of the (large) payload."""
    header = bytes([kind]) + (len(fields) + len(payload)).to_bytes(3, "big") + fields
    return b"".join((header, payload))


def body_sizes(geometry: Geometry) -> dict[FrameType, int]:
    """The exact body length of each frame type (PADDING: the maximum)."""
    return {
        FrameType.HELLO1: 1 + IDENTITY_KEYS_SIZE + xwing.CIPHERTEXT_SIZE,
        FrameType.HELLO2: xwing.CIPHERTEXT_SIZE + MAC_SIZE,
        FrameType.HELLO3: MAC_SIZE,
        FrameType.CREATE: 8 + geometry.header_size,
        FrameType.CREATED: 4 + geometry.created_size,
        FrameType.CELL: 4 + geometry.cell_size,
        FrameType.DESTROY: 5,
        FrameType.CLOSE: 1,
        FrameType.PADDING: MAX_PADDING,
        FrameType.CREDIT: 4,
        FrameType.DESCRIPTOR: MAX_DESCRIPTOR,
        FrameType.SIGNAL: 2 * NODE_ID + 1 + MAX_SIGNAL_PAYLOAD,
        FrameType.DHT: MAX_DHT,
        FrameType.PING: 4,
        FrameType.PONG: 4,
    }


VARIABLE_SIZE = frozenset(
    {FrameType.PADDING, FrameType.DESCRIPTOR, FrameType.SIGNAL, FrameType.DHT}
)


def decode_body(kind: FrameType, body: bytes) -> Frame:
    """Parse a frame body whose length the decoder already checked."""
    if kind is FrameType.CELL and len(body) >= 4:  # the hot paths, without a Buffer
        return Cell(int.from_bytes(body[:4], "big"), body[4:])
    if kind is FrameType.CREATE and len(body) >= 8:
        return Create(int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big"), body[8:])
    buf = Buffer(body)
    if kind is FrameType.HELLO1:
        version = buf.pull_uint8()
        if version != LINK_VERSION:
            raise RemoteProtocolError(f"unsupported link version {version}", CloseCode.HANDSHAKE)
        return Hello1(buf.pull_bytes(IDENTITY_KEYS_SIZE), buf.pull_bytes(xwing.CIPHERTEXT_SIZE))
    if kind is FrameType.HELLO2:
        return Hello2(buf.pull_bytes(xwing.CIPHERTEXT_SIZE), buf.pull_bytes(MAC_SIZE))
    if kind is FrameType.HELLO3:
        return Hello3(buf.pull_bytes(MAC_SIZE))
    if kind is FrameType.CREATE:
        return Create(buf.pull_uint32(), buf.pull_uint32(), buf.pull_rest())
    if kind is FrameType.CREATED:
        return Created(buf.pull_uint32(), buf.pull_rest())
    if kind is FrameType.CELL:
        return Cell(buf.pull_uint32(), buf.pull_rest())
    if kind is FrameType.DESTROY:
        return Destroy(buf.pull_uint32(), _code(buf.pull_uint8()))
    if kind is FrameType.CLOSE:
        return Close(_code(buf.pull_uint8()))
    if kind is FrameType.CREDIT:
        return Credit(buf.pull_uint32())
    if kind is FrameType.PING:
        return Ping(buf.pull_uint32())
    if kind is FrameType.PONG:
        return Pong(buf.pull_uint32())
    if kind is FrameType.DESCRIPTOR:
        return DescriptorFrame(body)
    if kind is FrameType.SIGNAL:
        origin, target, ttl = buf.pull_bytes(NODE_ID), buf.pull_bytes(NODE_ID), buf.pull_uint8()
        return Signal(origin, target, ttl, buf.pull_rest())
    if kind is FrameType.DHT:
        return DhtFrame(body)
    return Padding(len(body))


_TYPES = {int(t): t for t in FrameType}


class FrameDecoder:
    """Decoder of link messages (:meth:`feed_message`) or of a byte stream (:meth:`feed`,
    which returns the frames completed so far)."""

    def __init__(self, geometry: Geometry) -> None:
        self._sizes = body_sizes(geometry)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        """Raises RemoteProtocolError on an unknown type or a wrong length."""
        buf = self._buf
        if buf:
            buf += data
            src: bytes | bytearray = buf
        else:
            src = data  # at a frame boundary: parse in place, buffer only the remainder
        frames: list[Frame] = []
        pos, end = 0, len(src)
        try:
            while end - pos >= FRAME_HEADER:
                kind = _TYPES.get(src[pos])
                if kind is None:
                    raise RemoteProtocolError(f"unknown link frame type {src[pos]}")
                length = int.from_bytes(src[pos + 1 : pos + FRAME_HEADER], "big")
                limit = self._sizes[kind]
                if length > limit or (kind not in VARIABLE_SIZE and length != limit):
                    raise RemoteProtocolError(
                        f"{kind.name} frame of {length} bytes", CloseCode.PROTOCOL
                    )
                start, pos = pos + FRAME_HEADER, pos + FRAME_HEADER + length
                if pos > end:
                    pos = start - FRAME_HEADER
                    break
                if kind is FrameType.CELL:  # the hot paths: one copy of the payload, not two
                    circ = int.from_bytes(src[start : start + 4], "big")
                    frames.append(Cell(circ, bytes(src[start + 4 : pos])))
                elif kind is FrameType.CREATE:
                    circ = int.from_bytes(src[start : start + 4], "big")
                    epoch = int.from_bytes(src[start + 4 : start + 8], "big")
                    frames.append(Create(circ, epoch, bytes(src[start + 8 : pos])))
                else:
                    frames.append(decode_body(kind, bytes(src[start:pos])))
        finally:  # keep what was not consumed, also when raising (as errors are sticky)
            if src is buf:
                del buf[:pos]
            else:
                buf += src[pos:]
        return frames

    def feed_message(self, data: bytes) -> list[Frame]:
        """The frames of one link message, which must hold whole frames only.

        Raises RemoteProtocolError on an unknown type, a wrong length, a message that
        ends inside a frame, and on every message after one that failed (errors are
        sticky)."""
        if self._buf:
            raise RemoteProtocolError("link message after a malformed one")
        frames = self.feed(data)
        if self._buf:
            raise RemoteProtocolError(
                f"link message ends inside a frame ({len(self._buf)} bytes left over)"
            )
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buf)
