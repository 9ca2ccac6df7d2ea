"""The media transport: a zMesh link inside the encoded frames of a WebRTC video track
(aiortc), behind the RTCDataChannel shape (docs/decisions.md D58).

A drop-in :class:`~zmesh.runtime.rtc.RtcBackend`: this module's :func:`dial` and
:func:`answer` take and give complete SDP as :mod:`zmesh.runtime.webrtc`'s do, and hand out
a :class:`MediaTransport` through a :class:`~zmesh.runtime.rtc.PendingConnection`, so a
driver attaches it like a data channel (``AsyncNode(node, rtc=zmesh.runtime.media)``, or
:meth:`~zmesh.runtime.aio.AsyncNode.attach`) and the link handshake and cells above are
unchanged.  One connection is one ``RTCPeerConnection`` with one ``sendrecv`` VP8 video
track (ICE, DTLS-SRTP, RTP with NACK and RTX, RTCP); there is no data channel.

What moves the bytes is :class:`zmesh.shaping.media.MediaLink`: each end sends a frame
whenever the measured call's profile says (about 30 a second, ~10 KB each, ~2.4 Mbit/s),
busy or idle; the frames carry the link's messages as a byte stream with acknowledgements
and go-back-N retransmission, so the link above gets the reliable, ordered delivery it
assumes even when RTP loses a whole frame.

How the frames get in and out of aiortc 1.16 (measured in the tests):

* **Sending**: the track yields ``av.Packet`` objects, which aiortc's sender packetizes
  as they are (``Vp8Encoder.pack``: the VP8 payload descriptor, a picture id, the marker
  bit on the last packet) instead of encoding a picture; our encoder
  (:class:`~zmesh.runtime.media_call.EqualPacketizer`, set in the sender) cuts each
  frame into near-equal packets as Chromium does, datagrams of at most 1,142 bytes.  Our
  frames start with a VP8 frame tag and, for key frames, the start code and the size.
* **Looking like a call** (D59, :mod:`zmesh.runtime.media_call`): a native connection
  also carries an Opus audio track of cover (compact SDP version 4) and RTCP shaped like
  Chromium's transport-wide feedback, sizes and rates from the measured calls; frames
  follow :func:`~zmesh.shaping.media.media_profile`.  Browsers' connections (version 3)
  have neither: their RTP and RTCP are Chromium's own.
* **Receiving**: aiortc reassembles frames in a jitter buffer, then hands them to a
  decoder thread through a queue.  We replace both on the receiver (private attributes
  of ``RTCRtpReceiver``): :class:`_FrameAssembler` emits a frame as soon as its packets
  from the one with the VP8 start bit to the one with the marker bit are all there
  (aiortc's own buffer waits for the *next* frame's first packet, a frame interval of
  latency), and :class:`_Tap` hands frames to the transport instead of a decoder (the
  decoder thread idles on the original queue until the receiver stops).  Lost packets
  are NACKed and resent by aiortc (RTX); a frame lost for good is resent by MediaLink.
* **Socket buffers**: each ICE socket asks for :data:`RECEIVE_BUFFER` bytes.
* **Loopback**: aioice never gathers 127.0.0.1; with ``loopback=True`` the connection
  gathers only 127.0.0.1 (its gatherer is told which addresses to use).

The DTLS fingerprints in the two SDPs give :attr:`MediaTransport.channel_binding` as for a
data channel (aiortc checks the peer's certificate against the SDP's fingerprints); SRTP,
keyed by that DTLS handshake, encrypts and authenticates every frame.
"""

import asyncio
import contextlib
import fractions
import logging
import queue
import socket
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket

from ..errors import LocalProtocolError, RemoteProtocolError
from ..link.transport import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, DataChannel
from ..rng import DeterministicRng
from ..shaping.audio import AudioProfile
from ..shaping.media import MAX_MESSAGE, MediaLink, media_profile
from ..shaping.profile import VideoProfile
from ..signaling.sdp import CompactSdp, remote_fingerprint
from . import webrtc
from .aio import AsyncNode, wall_clock
from .entropy import SystemRng
from .media_call import (
    CoverAudio,
    install_packetizer,
    pace_consent,
    send_back_to_back,
    send_feedback,
    unmark_audio,
)
from .rtc import PendingConnection, RtcBackend, TransportError, answer_offer

__all__ = [
    "MediaTransport",
    "Transports",
    "answer",
    "dial",
    "link_nodes",
    "media_fingerprint",
]

log = logging.getLogger("zmesh.media")

CLOSE_LINGER: Final = 5.0  # seconds a closing link may spend delivering what it has
FIN_ACK_LINGER: Final = 0.25  # seconds the peer's FIN waits for our next frame (its ack)
MAX_TRACK_QUEUE: Final = 64  # frames waiting for aiortc's sender; older ones are dropped
MAX_ASSEMBLY: Final = 1024  # RTP packets held while frames are incomplete
MAX_PARTIAL: Final = 64  # incomplete frames held (by RTP timestamp)
#: socket receive buffer asked for (the default, 208 KiB of kernel memory, is ~90 RTP
#: packets: a loop stalled for a few hundred ms on a loaded machine overflowed it and lost
#: ~8% of the datagrams; see D58)
RECEIVE_BUFFER: Final = 4 << 20
VIDEO_CLOCK: Final = fractions.Fraction(1, 90000)


def media_fingerprint(sdp: str, role: str) -> bytes:
    """The SHA-256 DTLS fingerprint of a peer's media SDP, checked (one video section, a
    DTLS role valid for ``role``: :func:`~zmesh.signaling.sdp.remote_fingerprint`)."""
    return remote_fingerprint(sdp, role, media=True)


# -- aiortc's sending and receiving ends ---------------------------------------------------


class _FrameTrack(MediaStreamTrack):
    """A video track whose 'frames' are already encoded: aiortc packetizes them as given."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._frames: deque[av.Packet[Any]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, frame: bytes, pts: int) -> None:
        if len(self._frames) >= MAX_TRACK_QUEUE:  # the sender stalled: lose the oldest
            self._frames.popleft()
            self.dropped += 1
        packet = av.Packet(frame)
        packet.pts = pts
        packet.time_base = VIDEO_CLOCK
        self._frames.append(packet)
        self._ready.set()

    async def recv(self) -> "av.Packet[Any]":  # aiortc packetizes a Packet as it is
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._frames.popleft()

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class _FrameAssembler:
    """Replaces aiortc's video jitter buffer: a frame out as soon as it is complete.

    Packets are grouped by RTP timestamp; a frame is complete when the packets from the
    one whose VP8 payload descriptor has the start bit (and partition 0) to the one with
    the marker bit are all held, in sequence.  Bounded: at most MAX_PARTIAL frames and
    MAX_ASSEMBLY packets wait; the oldest frame is dropped beyond (MediaLink resends)."""

    capacity = MAX_ASSEMBLY

    def __init__(self) -> None:
        self._partial: dict[int, dict[int, RtpPacket]] = {}  # timestamp -> seq -> packet
        self._held = 0
        self._done: deque[int] = deque(maxlen=MAX_PARTIAL)  # timestamps already emitted

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        ts = packet.timestamp
        if ts in self._done:
            return False, None  # a late retransmission of a frame already delivered
        group = self._partial.setdefault(ts, {})
        if packet.sequence_number in group:
            return False, None
        group[packet.sequence_number] = packet
        self._held += 1
        while len(self._partial) > MAX_PARTIAL or self._held > MAX_ASSEMBLY:
            oldest = next(iter(self._partial))
            self._held -= len(self._partial.pop(oldest))
        frame = self._complete(group)
        if frame is None:
            return False, None
        self._held -= len(self._partial.pop(ts))
        self._done.append(ts)
        return False, JitterFrame(data=frame, timestamp=ts)

    @staticmethod
    def _complete(group: dict[int, RtpPacket]) -> bytes | None:
        first = next(
            (s for s, p in group.items() if p.payload and p.payload[0] & 0x1F == 0x10), None
        )
        if first is None:
            return None
        parts: list[bytes] = []
        seq = first
        for _ in range(len(group)):
            packet = group.get(seq)
            if packet is None:
                return None
            parts.append(packet._data)  # type: ignore[attr-defined]  # aiortc's depayload
            if packet.marker:
                return b"".join(parts)
            seq = (seq + 1) & 0xFFFF
        return None


class _Tap:
    """Replaces the receiver's decoder queue: frames go to ``deliver``; the decoder thread
    keeps waiting on the original queue, which gets the receiver's stop signal."""

    def __init__(self, original: "queue.Queue[Any]", deliver: Any) -> None:
        self._original = original
        self._deliver = deliver

    def put(self, item: Any) -> None:
        if item is None:
            self._original.put(None)
        else:
            self._deliver(item[1].data)

    def get(self) -> Any:
        return self._original.get()


def _install(receiver: RTCRtpReceiver, deliver: Any, *, video: bool = True) -> None:
    """Take frames from ``receiver`` before its decoder (see the module doc); an audio
    receiver's frames (cover) are dropped there."""
    name = "_RTCRtpReceiver__"
    if video:
        setattr(receiver, name + "jitter_buffer", _FrameAssembler())
    else:
        deliver = _discard
    setattr(
        receiver, name + "decoder_queue", _Tap(getattr(receiver, name + "decoder_queue"), deliver)
    )


def _discard(frame: bytes) -> None:
    """The peer's cover audio: nothing to do with it."""


def _loopback_only(pc: RTCPeerConnection) -> None:
    """Gather only 127.0.0.1 (aioice skips it; see the module doc)."""
    for transceiver in pc.getTransceivers():
        connection: Any = transceiver.receiver.transport.transport.iceGatherer._connection
        connection.get_component_candidates = _only_loopback(connection)


def _only_loopback(connection: Any) -> Callable[..., Awaitable[Any]]:
    gather = connection.get_component_candidates

    async def loopback(component: int, addresses: list[str], timeout: int = 5) -> Any:
        return await gather(component=component, addresses=["127.0.0.1"], timeout=timeout)

    return loopback


def _enlarge_receive_buffers(pc: RTCPeerConnection) -> None:
    """Ask for RECEIVE_BUFFER bytes of socket buffer on each gathered ICE socket (the
    kernel caps it at net.core.rmem_max); see RECEIVE_BUFFER."""
    for transceiver in pc.getTransceivers():
        connection: Any = transceiver.receiver.transport.transport.iceGatherer._connection
        for protocol in connection._protocols:
            sock = protocol.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)


# -- the transport --------------------------------------------------------------------------


class MediaTransport(DataChannel):
    """One end of a media link, shaped like an ``RTCDataChannel`` (see the module doc).

    Obtained from :meth:`PendingConnection.complete` or :meth:`PendingConnection.connected`,
    already open.  ``send`` never waits: :attr:`bufferedAmount` is the bytes not yet put
    in a frame, and ``onbufferedamountlow`` fires as frames take them.  Everything runs on
    the event loop (aiortc's callbacks included)."""

    def __init__(
        self,
        pc: RTCPeerConnection,
        profile: VideoProfile | None = None,
        *,
        audio: bool = True,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        super().__init__(
            self._loop.call_soon,
            max_message_size=MAX_MESSAGE,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
        )
        self._pc = pc
        self._track = _FrameTrack()
        install_packetizer(pc.addTrack(self._track))
        self._audio: CoverAudio | None = None
        self._cover_rng = DeterministicRng(SystemRng().bytes(32), b"cover")
        self._profile = profile if profile is not None else media_profile(self._cover_rng)
        if audio:
            self._audio = CoverAudio(AudioProfile.measured(), self._cover_rng)
            pc.addTrack(self._audio)
        self._feedback: asyncio.Task[None] | None = None
        self._link: MediaLink | None = None
        self._origin = 0.0
        self._pts = -1  # the last frame's RTP timestamp (90 kHz, from _origin)
        self._timer: asyncio.TimerHandle | None = None
        self._early: list[bytes] = []  # frames that came before we were open
        self._teardown_task: asyncio.Task[None] | None = None
        self._finishing = False  # closed here, but frames still flow while lingering
        self._linger_done: Callable[[], bool] = lambda: self._link is None or self._link.done

    def _attach_receivers(self) -> None:
        for transceiver in self._pc.getTransceivers():
            _install(transceiver.receiver, self._on_frame, video=transceiver.kind == "video")

    @property
    def link(self) -> MediaLink | None:
        """The media link (its counters: frames_sent, data_sent, resent), once open."""
        return self._link

    async def establish(self, answer_sdp: str | None, binding: bytes, timeout: float) -> None:
        """Apply the peer's answer (dialler), then wait for DTLS-SRTP to connect."""
        connected = asyncio.Event()

        @self._pc.on("connectionstatechange")
        def on_state() -> None:
            state = self._pc.connectionState
            if state == "connected":
                connected.set()
            elif state in ("failed", "closed"):
                connected.set()
                self._gone(f"the media connection is {state}")

        try:
            async with asyncio.timeout(timeout):
                if answer_sdp is not None:
                    try:
                        await self._pc.setRemoteDescription(
                            RTCSessionDescription(answer_sdp, "answer")
                        )
                    except ValueError as exc:
                        raise RemoteProtocolError(f"answer SDP rejected: {exc}") from None
                if self._pc.connectionState != "connected":
                    await connected.wait()
        except TimeoutError:
            raise TransportError(f"the media track did not connect within {timeout:g} s") from None
        if self._pc.connectionState != "connected":
            raise TransportError(f"the media connection is {self._pc.connectionState}")
        self.channel_binding = binding
        unmark_audio(self._pc)
        send_back_to_back(self._pc)
        now = self._loop.time()
        self._origin = now
        seed = SystemRng().bytes(32)
        self._link = MediaLink(self._profile, DeterministicRng(seed, b"zmesh-media"), now)
        if self._state == "connecting":
            self._state = "open"
        for frame in self._early:
            self._on_frame(frame)
        self._early.clear()
        self._arm()
        if self._audio is not None:
            self._feedback = self._loop.create_task(send_feedback(self._pc, self._cover_rng))

    async def wait_closed(self) -> None:
        if self._teardown_task is not None:
            await asyncio.shield(self._teardown_task)

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until the connection is torn down."""
        self.close()
        if self._teardown_task is None:  # never opened: nothing to linger for
            self._teardown_task = self._loop.create_task(self._teardown(0.0))
        await self.wait_closed()

    # -- DataChannel -------------------------------------------------------------------
    def _transmit(self, data: bytes) -> None:
        assert self._link is not None
        try:
            self._link.send(data)
        except LocalProtocolError as exc:  # past MAX_BUFFER: the node's window failed
            self._shut(str(exc))

    def _buffered(self) -> int:
        return self._link.buffered if self._link is not None else 0

    def _release(self, *, local: bool, graceful: bool) -> None:
        if self._teardown_task is not None:
            return
        link = self._link
        if link is None or not graceful:
            linger = 0.0
        elif local:  # deliver what we hold: FIN, acknowledged
            link.finish()
            self._finishing = True
            linger = CLOSE_LINGER
        else:  # the peer finished: one more frame acknowledges its FIN
            sent = link.frames_sent
            self._finishing = True
            self._linger_done = lambda: link.frames_sent > sent
            linger = FIN_ACK_LINGER
        self._teardown_task = self._loop.create_task(self._teardown(linger))

    # -- frames ------------------------------------------------------------------------
    def _arm(self) -> None:
        if self._link is not None and not self._pc_closed():
            self._timer = self._loop.call_at(self._link.get_timer(), self._tick)

    def _tick(self) -> None:
        link = self._link
        assert link is not None
        before = self.bufferedAmount
        now = self._loop.time()
        link.handle_timer(now)
        for frame in link.frames_to_send():
            # one RTP timestamp per frame (frames due at once would share one otherwise)
            self._pts = max(self._pts + 1, round((now - self._origin) * 90000))
            self._track.put(frame, self._pts)
        self._buffered_changed(before)
        self._arm()

    def _on_frame(self, frame: bytes) -> None:
        """A whole encoded frame from the peer (on the loop, from aiortc's receiver)."""
        link = self._link
        if link is None:
            if len(self._early) < MAX_TRACK_QUEUE:
                self._early.append(frame)
            return
        if self._state not in ("open", "closing") and not self._finishing:
            return
        try:
            messages = link.receive(frame, self._loop.time())
        except RemoteProtocolError as exc:
            log.info("media event=protocol_error error=%r", str(exc))
            self._shut(str(exc))
            return
        for message in messages:
            self._received(message)
        if link.peer_finished:
            self._remote_closed()

    def _gone(self, reason: str) -> None:
        if self._link is not None:
            self._remote_closed(reason)

    def _pc_closed(self) -> bool:
        return self._pc.connectionState == "closed"

    async def _teardown(self, linger: float) -> None:
        """Stop, after at most ``linger`` seconds for the link to say its last (see
        :meth:`_release`) while the connection lives."""
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(linger):
                    while not self._linger_done() and self._pc.connectionState == "connected":
                        await asyncio.sleep(0.01)
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._feedback is not None:
                self._feedback.cancel()
            self._track.stop()
            if self._audio is not None:
                self._audio.stop()
            await self._pc.close()


# -- setting up connections -----------------------------------------------------------------


async def _new_connection(
    *, loopback: bool, max_pending: int, max_pending_bytes: int, remote_offer: str | None
) -> tuple[MediaTransport, str]:
    pace_consent()
    pc = RTCPeerConnection()
    try:
        if remote_offer is not None:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(remote_offer, "offer"))
            except ValueError as exc:
                raise RemoteProtocolError(f"offer SDP rejected: {exc}") from None
        # a native dial sends cover audio; an answer has it if the offer asks (browsers' don't)
        audio = remote_offer is None or any(t.kind == "audio" for t in pc.getTransceivers())
        transport = MediaTransport(
            pc, audio=audio, max_pending=max_pending, max_pending_bytes=max_pending_bytes
        )
        transport._attach_receivers()
        if loopback:
            _loopback_only(pc)
        description = (
            await pc.createAnswer() if remote_offer is not None else await pc.createOffer()
        )
        await pc.setLocalDescription(description)
        _enlarge_receive_buffers(pc)
    except BaseException:
        await pc.close()
        raise
    return transport, pc.localDescription.sdp


async def _local_description(
    timeout: float, loopback: bool, max_pending: int, max_pending_bytes: int, offer: str | None
) -> tuple[MediaTransport, str]:
    try:
        async with asyncio.timeout(timeout):
            return await _new_connection(
                loopback=loopback,
                max_pending=max_pending,
                max_pending_bytes=max_pending_bytes,
                remote_offer=offer,
            )
    except TimeoutError:
        role = "answer" if offer is not None else "offer"
        raise TransportError(f"creating the media {role} took over {timeout:g} s") from None


async def dial(
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingConnection[MediaTransport], str]:
    """A new connection with our video track, pending, and its complete offer SDP."""
    transport, sdp = await _local_description(
        timeout, loopback, max_pending, max_pending_bytes, None
    )
    return PendingConnection(transport, sdp, None, media_fingerprint), sdp


async def answer(
    offer_sdp: str,
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingConnection[MediaTransport], str]:
    """Apply a peer's media offer; return the pending connection and our answer SDP."""
    return await answer_offer(
        offer_sdp,
        lambda: _local_description(timeout, loopback, max_pending, max_pending_bytes, offer_sdp),
        media_fingerprint,
    )


class Transports:
    """An :class:`~zmesh.runtime.rtc.RtcBackend` for ``--transport media``: it dials over
    the media transport and answers each offer with what the offer asks for (a video
    section: this module; a data channel: :mod:`zmesh.runtime.webrtc`), so a node that
    links over media still takes browsers' and older nodes' data channels."""

    async def dial(self, *, loopback: bool = False) -> tuple[PendingConnection[Any], str]:
        return await dial(loopback=loopback)

    async def answer(
        self, offer_sdp: str, *, loopback: bool = False
    ) -> tuple[PendingConnection[Any], str]:
        """RemoteProtocolError for an offer that is neither."""
        if CompactSdp.from_sdp(offer_sdp).media:
            return await answer(offer_sdp, loopback=loopback)
        return await webrtc.answer(offer_sdp, loopback=loopback)


async def link_nodes(dialer: AsyncNode, answerer: AsyncNode, rtc: RtcBackend | None = None) -> None:
    """Link two drivers in this process over ``rtc`` (this module by default; pass
    :mod:`zmesh.runtime.webrtc` for a data channel) without signaling: the SDPs are
    handed over directly, each end attaches its transport, and this returns once the
    link handshake is done.  Loopback candidates only.  Raises TransportError,
    TimeoutError or RemoteProtocolError."""
    backend: Any = rtc if rtc is not None else sys.modules[__name__]
    pending, offer = await backend.dial(loopback=True)
    try:
        pending_answer, answer_sdp = await backend.answer(offer, loopback=True)
    except BaseException:
        await pending.aclose()
        raise
    ours, theirs = await asyncio.gather(pending.complete(answer_sdp), pending_answer.connected())
    answerer.attach(theirs, None)
    dialer.attach(ours, answerer.node.descriptor(wall_clock()))
    await dialer.wait_link(answerer.node.node_id)
