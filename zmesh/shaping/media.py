"""The media link: a reliable, ordered message channel inside the encoded frames of a
video track, sent at the cadence and sizes of a real call (docs/decisions.md D58).

A transport that carries a zMesh link in a WebRTC video track hands each encoded frame it
receives to :meth:`MediaLink.receive` and sends the frames :meth:`MediaLink.handle_timer`
emits, at the times :meth:`MediaLink.get_timer` asks for.  The frames' times and sizes
come from a :class:`~zmesh.shaping.profile.VideoProfile` (the measured Chromium call) and
the link's own :class:`~zmesh.rng.Rng`, never from what is carried: both ends send a frame
whenever the profile says, full of data or of cover.  Messages (the link's, whole) are cut
into a byte stream that the frames carry; RTP over UDP may lose a frame, so the stream has
its own acknowledgements and go-back-N retransmission, piggybacked on the frames going
the other way (both ends send about 30 frames a second, busy or idle).

Wire format: one encoded frame (what aiortc's VP8 packetizer takes and its depacketizer
gives back, and what ``RTCRtpScriptTransform`` shows a page)::

    VP8 frame tag (3 bytes, RFC 6386 section 9.1: key-frame bit, version 0, shown,
        the first partition's size)
    | key frames only: start code 9d 01 2a, u16le width, u16le height (section 9.2)
    | u8 MAGIC | u8 flags | u48 offset | u48 ack | u24 length | data[length] | cover

``offset`` is the position of ``data`` in the sender's byte stream, ``ack`` the number of
the peer's stream bytes received in order, ``flags`` NACK (a gap was seen: resend from
``ack``) and FIN (the sender's stream ends after this frame's data).  ``cover`` is zeros:
SRTP encrypts every RTP payload, so no observer sees them, nor the header; the peer does.
The byte stream is messages, each ``u32 length | message``; a message joins it when a
frame has room for it, and a lone CREDIT, PING or PONG frame (the scheduler's ``URGENT``)
joins ahead of other waiting messages, so a heartbeat never waits behind a window of
cells (a link whose PONGs waited behind megabytes was closed as "peer silent").

Sans-I/O: ``now`` and an Rng come in; frames are pulled (:meth:`MediaLink.frames_to_send`).
"""

import json
import math
from collections import deque
from importlib import resources
from typing import Final

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..rng import Rng
from .profile import VideoProfile, pick
from .scheduler import URGENT, URGENT_SIZE

MAGIC: Final = 0x5A
NACK: Final = 0x01
FIN: Final = 0x02
TAG: Final = 3  # the VP8 frame tag
KEY_HEADER: Final = 7  # a key frame's start code, width and height
START_CODE: Final = b"\x9d\x01\x2a"
HEADER: Final = 1 + 1 + 6 + 6 + 3  # magic, flags, offset, ack, length
MIN_FRAME: Final = TAG + KEY_HEADER + HEADER  # the smallest frame carries the header
MAX_FRAME: Final = 1 << 20  # a frame (key frames included) is at most 1 MiB
MAX_MESSAGE: Final = 262144  # as a data channel (the link batches frames up to this)
LENGTH: Final = 4  # a message's length prefix in the stream
#: bytes the sender may hold (sent but not acknowledged, and not yet sent); the node's
#: credit window (512 frames of 8.2 KB) keeps an honest link far below
MAX_BUFFER: Final = 40 << 20
# Retransmission timeout, RFC 6298: SRTT and RTTVAR from acks of new data (never of data
# sent twice: Karn), RTO = SRTT + 4 RTTVAR within these bounds, doubled on each expiry.
# A fixed 0.4 s made a loaded machine's queueing delay (RTT of seconds) resend whole
# windows again and again: the resends loaded it more, and links died (D58).
RTO_INITIAL: Final = 1.0
RTO_MIN: Final = 0.2
RTO_MAX: Final = 10.0
MAX_SAMPLES: Final = 4096  # frames of new data awaiting their ack, for RTT samples
FIN_FRAMES: Final = 2  # frames that carry FIN before a finished link is done
NACK_HOLDOFF: Final = 0.15  # after a resend, NACKs are ignored this long (or SRTT if longer)
MAX_LAG: Final = 0.25  # a driver stalled longer skips the frames it missed
WIDTH, HEIGHT = 1280, 720  # the measured call's resolution
MEDIA_PROFILE_FILE: Final = "media_profile.json"
MAX_PROFILES: Final = 64


def media_profiles() -> tuple[VideoProfile, ...]:
    """The video profiles media links send (D59): the VP8 frames of each direction of the
    judge's calls (``bench/classify.py``) with a noisy camera, 1.2 Mbit/s or more
    (``media_profile.json``, ``bench/audio_profile.py --video``); ValueError if the file
    is malformed.  The canvas call of :meth:`VideoProfile.measured` (2.42 Mbit/s, frames
    of 9-11 KB) ran faster than those calls and with a much narrower spread of sizes."""
    text = resources.files(__package__).joinpath(MEDIA_PROFILE_FILE).read_text()
    try:
        directions = json.loads(text)["directions"][:MAX_PROFILES]
        profiles = tuple(VideoProfile.from_json(json.dumps(d)) for d in directions)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"malformed media profile: {exc!r}") from None
    if not profiles:
        raise ValueError("a media profile needs at least one direction")
    return profiles


def media_profile(rng: Rng) -> VideoProfile:
    """One of :func:`media_profiles`, drawn for one link: each link sends as one call
    direction did (the calls differ from each other: 1.0-2.2 Mbit/s, median frames
    3-10 KB); a draw from them all would look like no call."""
    return pick(rng, media_profiles())


def vp8_header(size: int, *, key: bool) -> bytes:
    """The VP8 frame tag (and key-frame header) of a frame of ``size`` bytes."""
    first_part = min(size // 8, (1 << 19) - 1)  # a plausible first partition
    tag = (0 if key else 1) | (1 << 4) | (first_part << 5)  # version 0, show_frame
    head = tag.to_bytes(3, "little")
    if key:
        head += START_CODE + WIDTH.to_bytes(2, "little") + HEIGHT.to_bytes(2, "little")
    return head


def equal_pieces(length: int, max_piece: int) -> list[int]:
    """The sizes of ``ceil(length / max_piece)`` pieces of ``length`` bytes that differ by
    at most one byte, larger ones first: how Chromium cuts a video frame into RTP packets
    (where aiortc cuts full pieces and a remainder; D59).  ValueError if ``max_piece`` < 1."""
    if max_piece < 1:
        raise ValueError("pieces must hold at least one byte")
    count = max(1, -(-length // max_piece))
    small, extra = divmod(length, count)
    return [small + 1] * extra + [small] * (count - extra)


def encode_frame(
    size: int, *, key: bool, flags: int, offset: int, ack: int, data: bytes | memoryview
) -> bytes:
    """One frame of exactly ``size`` bytes (the rest cover).  ValueError if it cannot hold
    ``data``."""
    head = vp8_header(size, key=key)
    room = size - len(head) - HEADER
    if room < len(data) or size > MAX_FRAME:
        raise ValueError(f"a {size}-byte frame cannot carry {len(data)} bytes")
    return b"".join(
        (
            head,
            bytes((MAGIC, flags)),
            offset.to_bytes(6, "big"),
            ack.to_bytes(6, "big"),
            len(data).to_bytes(3, "big"),
            data,
            bytes(room - len(data)),
        )
    )


def decode_frame(frame: bytes) -> tuple[bool, int, int, int, bytes]:
    """``(key, flags, offset, ack, data)`` of a frame; RemoteProtocolError if malformed."""
    if not TAG + HEADER <= len(frame) <= MAX_FRAME:
        raise RemoteProtocolError(f"media frame of {len(frame)} bytes")
    key = not frame[0] & 1
    pos = TAG
    if key:
        if frame[TAG : TAG + 3] != START_CODE or len(frame) < MIN_FRAME:
            raise RemoteProtocolError("key frame without the VP8 start code")
        pos += KEY_HEADER
    if frame[pos] != MAGIC:
        raise RemoteProtocolError("media frame without the zMesh marker")
    flags = frame[pos + 1]
    if flags & ~(NACK | FIN):
        raise RemoteProtocolError(f"unknown media frame flags {flags:#x}")
    offset = int.from_bytes(frame[pos + 2 : pos + 8], "big")
    ack = int.from_bytes(frame[pos + 8 : pos + 14], "big")
    length = int.from_bytes(frame[pos + 14 : pos + 17], "big")
    start = pos + HEADER
    if start + length > len(frame):
        raise RemoteProtocolError("media frame data beyond its end")
    return key, flags, offset, ack, frame[start : start + length]


class MediaLink:
    """One end of a media link: messages in and out, frames in and out (module doc).

    Inputs take ``now``: :meth:`send`, :meth:`receive`, :meth:`handle_timer`,
    :meth:`finish`.  Outputs are pulled: :meth:`frames_to_send`, :meth:`get_timer`, the
    messages :meth:`receive` returns, :attr:`peer_finished` and :attr:`done`.
    """

    def __init__(self, profile: VideoProfile, rng: Rng, now: float) -> None:
        self._profile = profile
        self._rng = rng
        # sending: _out holds the stream from _acked on; _next is the next byte to send.
        # Messages wait whole in _queue (or _urgent) until a frame has room for them, so a
        # lone CREDIT, PING or PONG can go ahead of bulk data (see URGENT)
        self._out = bytearray()
        self._queue: deque[bytes] = deque()
        self._urgent: deque[bytes] = deque()
        self._queued = 0  # bytes (length prefixes included) in _queue and _urgent
        self._acked = 0
        self._next = 0
        self._sent_max = 0  # the furthest byte ever sent (an ack beyond it is forged)
        self._progress_at = now  # when _acked last moved (or data was first sent)
        self._rewound_at = -math.inf
        self._rewound_for = -1  # the ack the last resend started from
        self._srtt: float | None = None
        self._rttvar = 0.0
        self.rto = RTO_INITIAL
        self._samples: deque[tuple[int, float]] = deque()  # (end offset, sent at)
        self._finishing = False
        self._fins = 0  # frames sent with FIN
        self._key_next = True  # a stream starts with a key frame
        self._next_key = (
            now + profile.key_interval if profile.key_interval is not None else math.inf
        )
        self.next_send = now + pick(rng, profile.interval)
        self._outbox: list[bytes] = []
        # receiving
        self._expected = 0
        self._nack = False
        self._in = bytearray()  # stream bytes not yet a whole message
        self._fin_at: int | None = None  # where the peer's stream ends
        self.peer_finished = False
        self.frames_sent = 0
        self.data_sent = 0  # stream bytes sent (retransmissions included)
        self.resent = 0  # stream bytes sent again

    # -- sending ------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        """Stream bytes not yet sent (what the transport reports as bufferedAmount)."""
        return self._acked + len(self._out) - self._next + self._queued

    @property
    def done(self) -> bool:
        """Finishing, everything sent was acknowledged, and FIN went out in two frames (the
        first may still be on its way to the network when the second is made)."""
        return self._finishing and not self._out and not self._queued and self._fins >= FIN_FRAMES

    def send(self, message: bytes) -> None:
        """Queue one message.  LocalProtocolError if it is over MAX_MESSAGE, after
        :meth:`finish`, or past MAX_BUFFER (the transport must close then)."""
        if len(message) > MAX_MESSAGE:
            raise LocalProtocolError(f"media message of {len(message)} bytes")
        if self._finishing:
            raise LocalProtocolError("send after finish")
        if len(self._out) + self._queued + LENGTH + len(message) > MAX_BUFFER:
            raise LocalProtocolError("media link send buffer full")
        urgent = len(message) == URGENT_SIZE and message[0] in URGENT
        (self._urgent if urgent else self._queue).append(message)
        self._queued += LENGTH + len(message)

    def finish(self) -> None:
        """No more messages: frames carry FIN once the queue is sent."""
        self._finishing = True

    def get_timer(self) -> float:
        return self.next_send

    def handle_timer(self, now: float) -> None:
        """Emit the frames due by ``now``."""
        if now - self.next_send > MAX_LAG:
            self.next_send = now
        while self.next_send <= now:
            self._emit(now)
            self.next_send += pick(self._rng, self._profile.interval)

    def next_frame(self, now: float) -> bytes:
        """Emit one frame now, whatever the timer says: for a transport whose frames are
        clocked by a video encoder (a browser's ``RTCRtpScriptTransform`` replaces each
        encoded frame with this one, D58), so the times are the encoder's and the sizes
        the profile's.  The timer is not used then."""
        self.next_send = now
        self._emit(now)
        self.next_send = now + pick(self._rng, self._profile.interval)
        return self._outbox.pop()

    def frames_to_send(self) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def _emit(self, now: float) -> None:
        profile = self._profile
        key = self._key_next or self.next_send >= self._next_key
        if key and profile.key_size:
            size = pick(self._rng, profile.key_size)
        else:
            size = pick(self._rng, profile.delta_size)
        if key and self._next_key <= self.next_send:
            assert profile.key_interval is not None
            self._next_key = self.next_send + profile.key_interval
        self._key_next = False
        size = min(max(size, MIN_FRAME), MAX_FRAME)
        if self._next > self._acked and now - self._progress_at >= self.rto:
            self.rto = min(self.rto * 2, RTO_MAX)  # RFC 6298 section 5.5
            self._rewind(now)  # nothing acknowledged for RTO: resend from the last ack
        room = size - TAG - (KEY_HEADER if key else 0) - HEADER
        start = self._next - self._acked
        while len(self._out) - start < room and self._queued:  # urgent messages first
            message = (self._urgent or self._queue).popleft()
            self._queued -= LENGTH + len(message)
            self._out += len(message).to_bytes(LENGTH, "big")
            self._out += message
        data = memoryview(self._out)[start : start + room]
        flags = NACK if self._nack else 0
        self._nack = False
        if self._finishing and not self._queued and start + len(data) == len(self._out):
            flags |= FIN
            self._fins += 1
        if self._next == self._acked and data:
            self._progress_at = now  # the RTO counts from the first unacknowledged send
        frame = encode_frame(
            size, key=key, flags=flags, offset=self._next, ack=self._expected, data=data
        )
        sent = len(data)
        data.release()
        if self._next < self._sent_max:
            self.resent += min(sent, self._sent_max - self._next)
        elif sent and len(self._samples) < MAX_SAMPLES:  # new data: an RTT sample to come
            self._samples.append((self._next + sent, now))
        self._next += sent
        self._sent_max = max(self._sent_max, self._next)
        self.data_sent += sent
        self.frames_sent += 1
        self._outbox.append(frame)

    def _rewind(self, now: float) -> None:
        self._next = self._acked
        self._rewound_for = self._acked
        self._rewound_at = now
        self._progress_at = now
        self._samples.clear()  # Karn: an ack of data sent twice times neither send

    def _sample(self, rtt: float) -> None:
        """RFC 6298 section 2."""
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self.rto = min(max(self._srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    # -- receiving ----------------------------------------------------------------------
    def receive(self, frame: bytes, now: float) -> list[bytes]:
        """The whole messages ``frame`` completes, in order.  RemoteProtocolError on a
        malformed frame, a forged acknowledgement or a message over MAX_MESSAGE."""
        _key, flags, offset, ack, data = decode_frame(frame)
        self._on_ack(ack, flags & NACK, now)
        end = offset + len(data)
        if self._fin_at is not None and end > self._fin_at:
            raise RemoteProtocolError("media stream data after its end")
        messages: list[bytes] = []
        if offset > self._expected:
            self._nack = True  # a gap: a frame was lost
        elif end > self._expected:
            self._in += data[self._expected - offset :]
            self._expected = end
            messages = self._messages()
        if flags & FIN and offset <= self._expected:
            self._fin_at = end
            if self._expected == end:
                self.peer_finished = True
        return messages

    def _on_ack(self, ack: int, nack: int, now: float) -> None:
        if ack > self._sent_max:
            raise RemoteProtocolError(
                "media acknowledgement of data never sent", CloseCode.PROTOCOL
            )
        if ack > self._acked:
            del self._out[: ack - self._acked]
            self._acked = ack
            self._next = max(self._next, ack)
            self._progress_at = now
            sent_at = None
            while self._samples and self._samples[0][0] <= ack:
                sent_at = self._samples.popleft()[1]
            if sent_at is not None:
                self._sample(now - sent_at)
        # A NACK names a gap at the peer's ack: resend from there, once per gap (the
        # frames already in flight NACK the same ack again), or again if that is long
        # past (the resend was lost too)
        holdoff = max(NACK_HOLDOFF, self._srtt or 0.0)
        if (
            nack
            and ack == self._acked < self._next
            and (ack != self._rewound_for or now - self._rewound_at >= holdoff)
        ):
            self._rewind(now)

    def _messages(self) -> list[bytes]:
        buf = self._in
        out: list[bytes] = []
        pos = 0
        while len(buf) - pos >= LENGTH:
            length = int.from_bytes(buf[pos : pos + LENGTH], "big")
            if length > MAX_MESSAGE:
                raise RemoteProtocolError(f"media message of {length} bytes", CloseCode.RESOURCE)
            if len(buf) - pos - LENGTH < length:
                break
            out.append(bytes(buf[pos + LENGTH : pos + LENGTH + length]))
            pos += LENGTH + length
        del buf[:pos]
        return out


__all__ = ["MediaLink", "decode_frame", "encode_frame", "vp8_header"]
