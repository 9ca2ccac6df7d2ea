"""The chunk protocol: what a fetcher and a provider say on one session stream (sans-I/O).

Theory of operation.  A fetcher opens a stream whose target is a content id (``zm1...``,
:data:`zmesh.chunks.manifest.ID_PREFIX`) on a session whose final hop is the provider:
the stream serves that one content.  Both directions carry messages::

    u8 type | u32 length | body[length]

The fetcher asks (:class:`ManifestRequest`, :class:`ProofRequest`,
:class:`PieceRequest`, :class:`Cancel`); the provider answers in the order asked
(:class:`ManifestReply` followed by :class:`Have` bitmaps, :class:`ProofReply`,
:class:`PieceReply`, :class:`NotHeld`).  A cancelled request that is already on its way
is answered anyway; the fetcher drops what it no longer needs.

Bounds.  Each message type has a fixed or maximum body length, checked when its five-byte
header arrives, so a decoder never buffers more than one message of the largest type its
side may receive (a request is at most 4 bytes of body; a piece at most
:data:`~zmesh.chunks.manifest.MAX_CHUNK_SIZE`).  A message its side may not receive, an
unknown type, or a wrong length is a :class:`ChunkProtocolError` (a
:class:`~zmesh.errors.RemoteProtocolError`: the boundary resets the stream and scores the
sender down).  What the provider does per stream and per session (how many requests may
wait, when it reads a piece) is :class:`ServeQueue`'s and the runtime's.
"""

from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum

from ..codec import Buffer, push_uint
from ..errors import LocalProtocolError
from .content import GroupProof, decode_group_proof
from .errors import ContentError, ProofError
from .manifest import MANIFEST_SIZE, MAX_CHUNK_SIZE, MAX_N, Layout
from .merkle import HASH_SIZE, MAX_PROOF_LENGTH

HEADER_SIZE = 5
MAX_HAVE_BYTES = 8192  # bitmap bytes of one Have message (65,536 pieces)
MAX_PROOF_SIZE = 2 + HASH_SIZE * (MAX_N + MAX_PROOF_LENGTH)
MAX_QUEUED = 64  # requests waiting at a provider, per stream


class ChunkProtocolError(ContentError):
    """A peer sent a chunk-protocol message that does not parse or is not allowed."""


class MessageType(IntEnum):
    MANIFEST_REQUEST = 1
    PROOF_REQUEST = 2
    PIECE_REQUEST = 3
    CANCEL = 4
    MANIFEST = 17
    HAVE = 18
    PROOF = 19
    PIECE = 20
    NOT_HELD = 21


class Role(IntEnum):
    """Which side decodes: the provider reads requests, the fetcher replies."""

    PROVIDER = 0
    FETCHER = 1


class Wanted(IntEnum):
    """What a :class:`NotHeld` says the provider lacks."""

    PROOF = 1
    PIECE = 2


@dataclass(frozen=True, slots=True)
class ManifestRequest:
    pass


@dataclass(frozen=True, slots=True)
class ProofRequest:
    group: int


@dataclass(frozen=True, slots=True)
class PieceRequest:
    index: int


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int


@dataclass(frozen=True, slots=True)
class ManifestReply:
    manifest: bytes  # the encoded manifest (the fetcher checks it hashes to the id)


@dataclass(frozen=True, slots=True)
class Have:
    """Bit ``i`` (most significant first) of ``bitmap`` says piece ``start + i`` is held."""

    start: int
    bitmap: bytes

    def indices(self) -> list[int]:
        """The piece indices the bitmap marks."""
        return [
            self.start + 8 * byte + bit
            for byte, value in enumerate(self.bitmap)
            if value
            for bit in range(8)
            if value & (0x80 >> bit)
        ]


@dataclass(frozen=True, slots=True)
class ProofReply:
    group: int
    proof: GroupProof


@dataclass(frozen=True, slots=True)
class PieceReply:
    index: int
    data: bytes


@dataclass(frozen=True, slots=True)
class NotHeld:
    what: Wanted
    number: int  # the group (PROOF) or the piece index (PIECE)


Request = ManifestRequest | ProofRequest | PieceRequest | Cancel
Reply = ManifestReply | Have | ProofReply | PieceReply | NotHeld
Message = Request | Reply

# type -> (the side that may receive it, smallest body, largest body)
_LIMITS: dict[MessageType, tuple[Role, int, int]] = {
    MessageType.MANIFEST_REQUEST: (Role.PROVIDER, 0, 0),
    MessageType.PROOF_REQUEST: (Role.PROVIDER, 4, 4),
    MessageType.PIECE_REQUEST: (Role.PROVIDER, 4, 4),
    MessageType.CANCEL: (Role.PROVIDER, 4, 4),
    MessageType.MANIFEST: (Role.FETCHER, MANIFEST_SIZE, MANIFEST_SIZE),
    MessageType.HAVE: (Role.FETCHER, 5, 4 + MAX_HAVE_BYTES),
    MessageType.PROOF: (Role.FETCHER, 4 + 2, 4 + MAX_PROOF_SIZE),
    MessageType.PIECE: (Role.FETCHER, 4 + 1, 4 + MAX_CHUNK_SIZE),
    MessageType.NOT_HELD: (Role.FETCHER, 5, 5),
}


def encode(message: Message) -> bytes:
    """The wire form of ``message``; raises LocalProtocolError for one no peer would
    accept (an oversized bitmap or piece, a number outside 32 bits)."""
    match message:
        case ManifestRequest():
            kind, body = MessageType.MANIFEST_REQUEST, b""
        case ProofRequest(group):
            kind, body = MessageType.PROOF_REQUEST, _u32(group)
        case PieceRequest(index):
            kind, body = MessageType.PIECE_REQUEST, _u32(index)
        case Cancel(index):
            kind, body = MessageType.CANCEL, _u32(index)
        case ManifestReply(manifest):
            kind, body = MessageType.MANIFEST, manifest
        case Have(start, bitmap):
            kind, body = MessageType.HAVE, _u32(start) + bitmap
        case ProofReply(group, proof):
            kind, body = MessageType.PROOF, _u32(group) + proof.encode()
        case PieceReply(index, data):
            kind, body = MessageType.PIECE, _u32(index) + data
        case NotHeld(what, number):
            kind, body = MessageType.NOT_HELD, bytes([what]) + _u32(number)
    _, low, high = _LIMITS[kind]
    if not low <= len(body) <= high:
        raise LocalProtocolError(f"a {kind.name} message body is {low}..{high} bytes")
    return bytes([kind]) + push_uint(len(body), 4) + body


def have_messages(layout: Layout, held: list[int]) -> list[Have]:
    """The :class:`Have` messages that mark the sorted piece indices ``held`` (none for
    an empty list): one per run of :data:`MAX_HAVE_BYTES` bitmap bytes holding a piece."""
    per_message = 8 * MAX_HAVE_BYTES
    out: list[Have] = []
    i = 0
    while i < len(held):
        start = held[i] - held[i] % per_message
        end = min(start + per_message, layout.pieces)
        bits = bytearray(-(-(end - start) // 8))
        while i < len(held) and held[i] < end:
            offset = held[i] - start
            bits[offset // 8] |= 0x80 >> (offset % 8)
            i += 1
        out.append(Have(start, bytes(bits)))
    return out


class MessageDecoder:
    """Cuts a stream's bytes into messages for one side (``role``): feed bytes with
    :meth:`feed`, take messages with :meth:`next_message`."""

    def __init__(self, role: Role) -> None:
        self.role = role
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held for a message not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        """Add stream bytes; raises ChunkProtocolError as soon as a header is bad."""
        self._buffer += data
        self._check_header()

    def next_message(self) -> Message | None:
        """The next complete message, or None.  Raises ChunkProtocolError for a body
        that does not parse (a bad proof, a wrong length for its type)."""
        buf = self._buffer
        if len(buf) < HEADER_SIZE:
            return None
        length = int.from_bytes(buf[1:HEADER_SIZE], "big")
        if len(buf) < HEADER_SIZE + length:
            return None
        kind = MessageType(buf[0])
        body = bytes(buf[HEADER_SIZE : HEADER_SIZE + length])
        del buf[: HEADER_SIZE + length]
        message = _parse(kind, body)
        self._check_header()
        return message

    def _check_header(self) -> None:
        buf = self._buffer
        if not buf:
            return
        try:
            kind = MessageType(buf[0])
        except ValueError:
            raise ChunkProtocolError(f"unknown chunk message type {buf[0]}") from None
        role, low, high = _LIMITS[kind]
        if role is not self.role:
            raise ChunkProtocolError(f"a {kind.name} message is not for this side")
        if len(buf) >= HEADER_SIZE:
            length = int.from_bytes(buf[1:HEADER_SIZE], "big")
            if not low <= length <= high:
                raise ChunkProtocolError(f"a {kind.name} message of {length} bytes")


def _parse(kind: MessageType, body: bytes) -> Message:
    buf = Buffer(body)
    match kind:
        case MessageType.MANIFEST_REQUEST:
            return ManifestRequest()
        case MessageType.PROOF_REQUEST:
            return ProofRequest(buf.pull_uint32())
        case MessageType.PIECE_REQUEST:
            return PieceRequest(buf.pull_uint32())
        case MessageType.CANCEL:
            return Cancel(buf.pull_uint32())
        case MessageType.MANIFEST:
            return ManifestReply(body)
        case MessageType.HAVE:
            return Have(buf.pull_uint32(), buf.pull_rest())
        case MessageType.PROOF:
            group = buf.pull_uint32()
            try:
                proof = decode_group_proof(buf.pull_rest())
            except ProofError as exc:
                raise ChunkProtocolError(str(exc)) from None
            return ProofReply(group, proof)
        case MessageType.PIECE:
            return PieceReply(buf.pull_uint32(), buf.pull_rest())
        case MessageType.NOT_HELD:
            what = buf.pull_uint8()
            if what not in (Wanted.PROOF, Wanted.PIECE):
                raise ChunkProtocolError(f"a NOT_HELD of unknown kind {what}")
            return NotHeld(Wanted(what), buf.pull_uint32())
    raise AssertionError(kind)  # pragma: no cover - every type is matched


def _u32(value: int) -> bytes:
    if not 0 <= value < 1 << 32:
        raise LocalProtocolError(f"{value} does not fit in 32 bits")
    return push_uint(value, 4)


class ServeQueue:
    """A provider's requests on one stream, in the order they are to be answered.

    Requests are checked against the content's layout (a group or piece outside it is a
    ChunkProtocolError) and queued; a repeated request waiting already is not queued twice,
    a :class:`Cancel` removes a waiting piece request, and more than ``limit`` waiting
    requests is a ChunkProtocolError (a fetcher must read what it asks for before asking
    for more).  The manifest may be asked once."""

    def __init__(self, layout: Layout, limit: int = MAX_QUEUED) -> None:
        self.layout = layout
        self.limit = limit
        self._queue: OrderedDict[tuple[int, int], Request] = OrderedDict()
        self._manifest_asked = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, request: Request) -> None:
        """Queue (or cancel) one request; raises ChunkProtocolError as above."""
        match request:
            case Cancel(index):
                self._queue.pop((MessageType.PIECE_REQUEST, index), None)
                return
            case ManifestRequest():
                if self._manifest_asked:
                    raise ChunkProtocolError("the manifest was asked for already")
                self._manifest_asked = True
                key = (MessageType.MANIFEST_REQUEST, 0)
            case ProofRequest(group):
                if not 0 <= group < self.layout.groups:
                    raise ChunkProtocolError(f"group {group} is outside the content")
                key = (MessageType.PROOF_REQUEST, group)
            case PieceRequest(index):
                if not 0 <= index < self.layout.pieces:
                    raise ChunkProtocolError(f"piece {index} is outside the content")
                key = (MessageType.PIECE_REQUEST, index)
        if key in self._queue:
            return
        if len(self._queue) >= self.limit:
            raise ChunkProtocolError(f"more than {self.limit} requests wait on one stream")
        self._queue[key] = request

    def next_request(self) -> Request | None:
        """The oldest waiting request, taken off the queue (None if there is none)."""
        if not self._queue:
            return None
        return self._queue.popitem(last=False)[1]
