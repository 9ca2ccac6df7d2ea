"""Native WebRTC transport: libdatachannel data channels behind the RTCDataChannel shape.

One :class:`WebRTCTransport` is one ``RTCPeerConnection`` (ICE, DTLS, SCTP) carrying one
reliable, ordered data channel.  The dialler calls :func:`dial`, ships the offer SDP to
the peer, and hands the answer to :meth:`PendingConnection.complete`; the peer calls
:func:`answer` and waits on :meth:`PendingConnection.connected`.  Offers and answers are
complete, standard SDP (ICE gathering has finished, candidates inlined); no STUN or TURN
servers are configured, so only host candidates are gathered.

The data channel is **negotiated** (``negotiated: true, id: 0``), labelled ``"zmesh"``:
both ends create it before the connection exists, no DCEP open message is exchanged, and
no "incoming channel" event can race with installing our handlers.  A browser peer does
the same with ``pc.createDataChannel("zmesh", {negotiated: true, id: 0})``.  Any other
channel a peer opens is closed on arrival.

:attr:`WebRTCTransport.channel_binding` is ``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))``
over the two raw 32-byte SHA-256 DTLS certificate fingerprints from the SDPs; both ends
compute the same bytes.  libdatachannel checks the peer's certificate against the
fingerprint in its SDP, so the binding names the DTLS session that carries the link.

What aiolibdatachannel 2026.10.15 needs, measured (see the tests):

* ``DataChannel.send(..., wait_for_drain=True)`` hangs for good once the low-water
  threshold is at or above what a send leaves buffered (64 KiB with 16 KiB messages, say):
  ``send`` clears its "buffer low" event whenever anything is buffered, but libdatachannel
  only fires the callback that sets it when the amount *falls from above* the threshold,
  so a buffer that never exceeds the threshold never re-arms it.
  We never use the wrapper's ``send``: :meth:`WebRTCTransport.send` hands the message to
  libdatachannel synchronously (what ``wait_for_drain=False`` does), and
  ``onbufferedamountlow`` comes from libdatachannel's own callback, which has the W3C
  semantics (fires when the amount drops from above the threshold to at or below it).
* The wrapper's per-channel receive queue holds 1,024 messages and silently discards the
  oldest when full, even on a reliable channel.  A reader task draining it is not enough:
  libdatachannel's threads schedule one loop callback per message, and all callbacks
  queued while the loop was busy run back to back before any reader task does.  (In the
  tests, 5,000 small messages to a reader doing 0.2 ms of work each: 1,500 to 2,200
  arrive.)  So we replace the channel's native message callback: messages go straight
  from libdatachannel's thread, under a lock, into this transport's own buffer (the
  inbox of :class:`~zmesh.link.transport.DataChannel`; one loop wake-up per batch), and
  ``onmessage`` is called from there; the same load loses nothing.  This
  uses the wrapper's private ``DataChannel._native`` (its ``_core.DataChannel``).
* That buffer is bounded: ``max_pending`` messages (default 4,096) and
  ``max_pending_bytes`` (default 64 MiB) received but not yet delivered to ``onmessage``.
  SCTP gives no backpressure here (libdatachannel reads everything as it arrives), so
  the bound relies on link-level credit flow control in the node, which keeps a peer
  below 512 unacknowledged frames per link: an honest peer never comes near it.  A peer
  that exceeds it is hostile or broken, and the transport closes with :attr:`error` set.
  (The byte bound matters because a message may be 256 KiB: 4,096 of them are 1 GiB.)
  Messages wait in the buffer while ``onmessage`` is ``None`` (between the channel opening
  and the driver attaching), and are delivered at most 256 per loop iteration so that one
  busy link does not starve the others.
* libjuice gathers no ``127.0.0.1`` candidate.  ``loopback=True`` pins the ICE port (a
  free UDP port picked by binding ``127.0.0.1:0``) and adds a ``127.0.0.1`` host
  candidate to the local SDP; tests and the local mesh use it.
* Messages above 256 KiB (the SDP's ``max-message-size``) are refused by libdatachannel;
  :meth:`WebRTCTransport.send` raises :class:`~zmesh.errors.LocalProtocolError` for them.
* A peer that vanishes without closing is noticed by ICE consent freshness after about
  30 s; the node's own keepalives should detect it sooner.

Importing this module imports aiolibdatachannel, which loads the native extension and
registers an ``atexit`` hook but starts no thread; libdatachannel starts its worker
threads with the first ``PeerConnection``.  Its callbacks run on those threads with the
GIL held, so ours only append to a deque and schedule work on the event loop.  Do not
``fork()`` a process after it has created a connection (use the ``spawn`` start method
or ``subprocess``).  The core never imports this module (it is CPython-only; Pyodide uses
the browser's RTCPeerConnection).
"""

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import aiolibdatachannel as rtc

from ..errors import RemoteProtocolError
from ..link.transport import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, DataChannel, Defer
from ..signaling.sdp import CHANNEL_ID, LABEL, MAX_MESSAGE_SIZE, CompactSdp, sdp_fingerprint
from .rtc import PendingConnection, TransportError, answer_offer

if TYPE_CHECKING:
    from .rtc import Establishing

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "LABEL",
    "MAX_MESSAGE_SIZE",
    "CompactSdp",
    "PendingConnection",
    "TransportError",
    "WebRTCTransport",
    "answer",
    "dial",
    "sdp_fingerprint",
]

log = logging.getLogger("zmesh.webrtc")

_LOOPBACK_ATTEMPTS: Final = 3
CLOSE_LINGER: Final = 5.0  # seconds a closing connection may spend delivering what it has
_LOOPBACK_PRIORITY: Final = (126 << 24) | (0xFFFF << 8) | 255  # best host candidate


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _with_loopback_candidate(sdp: str, port: int) -> str:
    """Add a ``127.0.0.1`` host candidate (libjuice gathers none) ahead of the others."""
    line = f"a=candidate:lo 1 UDP {_LOOPBACK_PRIORITY} 127.0.0.1 {port} typ host"
    lines = sdp.split("\r\n")
    for i, existing in enumerate(lines):
        if existing.startswith(("a=candidate:", "a=end-of-candidates")):
            lines.insert(i, line)
            break
    else:
        while lines and not lines[-1]:
            lines.pop()
        lines += [line, ""]
    return "\r\n".join(lines)


# -- the transport -------------------------------------------------------------------------


def _defer_threadsafe(loop: asyncio.AbstractEventLoop) -> Defer:
    """Run callbacks on ``loop``, from any thread (libdatachannel's included)."""

    def defer(callback: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            loop.call_soon_threadsafe(callback)

    return defer


class WebRTCTransport(DataChannel):
    """One end of a data channel, shaped like an ``RTCDataChannel`` (see the module doc).

    Obtained from :meth:`PendingConnection.complete` or :meth:`PendingConnection.connected`,
    already open.  ``send`` is synchronous and never waits: watch :attr:`bufferedAmount`
    and ``onbufferedamountlow`` for backpressure.  The inbox, the fire-once ``onclose``
    and :attr:`error` are :class:`~zmesh.link.transport.DataChannel`'s; libdatachannel's
    threads append to the inbox under a lock.  ``onopen`` is never called: the transport
    is handed out open.
    """

    def __init__(
        self,
        pc: rtc.PeerConnection,
        channel: rtc.DataChannel,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` for bounds below one message."""
        self._loop = asyncio.get_running_loop()
        super().__init__(
            _defer_threadsafe(self._loop),
            max_message_size=MAX_MESSAGE_SIZE,
            max_pending=max_pending,
            max_pending_bytes=max_pending_bytes,
            lock=threading.Lock(),
        )
        self._pc = pc
        self._channel = channel
        # The wrapper's private native handle: see the module doc for why.
        self._native = channel._native
        self._watcher: asyncio.Task[None] | None = None
        self._teardown_task: asyncio.Task[None] | None = None
        self._native.set_on_message(self._native_message)
        self._native.set_on_buffered_amount_low(self._native_buffered_low)

    async def establish(self, answer_sdp: str | None, binding: bytes, timeout: float) -> None:
        """Apply the peer's answer (dialler), then wait for the channel to open.

        Raises :class:`~zmesh.errors.RemoteProtocolError` for an answer libdatachannel
        refuses and :class:`TransportError` if the connection fails or times out.
        """
        try:
            async with asyncio.timeout(timeout):
                if answer_sdp is not None:
                    try:
                        await self._pc.set_remote_description(answer_sdp, "answer")
                    except rtc.RTCError as exc:
                        raise RemoteProtocolError(f"answer SDP rejected: {exc}") from None
                await self._channel.wait_open()
        except TimeoutError:
            raise TransportError(f"the data channel did not open within {timeout:g} s") from None
        except rtc.RTCError as exc:
            raise TransportError(f"the WebRTC connection failed: {exc}") from None
        self.channel_binding = binding
        with contextlib.suppress(rtc.RTCError):
            self._max_message_size = min(MAX_MESSAGE_SIZE, self._channel.max_message_size)
        if self._state == "connecting":
            self._state = "open"
        self._watcher = self._loop.create_task(self._watch())

    @property
    def max_message_size(self) -> int:
        """The largest message :meth:`send` takes: the SDP's ``max-message-size`` of both
        ends, at most :data:`MAX_MESSAGE_SIZE` (known once open)."""
        return self._max_message_size

    async def wait_closed(self) -> None:
        """Wait until the native connection is torn down (after a close)."""
        if self._teardown_task is not None:
            await asyncio.shield(self._teardown_task)
        await self._pc.wait_closed()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until the connection is torn down.

        Messages already passed to :meth:`send` are still delivered: the connection shuts
        down gracefully (SCTP SHUTDOWN) in the background, for at most
        :data:`CLOSE_LINGER` seconds, then is torn down.
        """
        self.close()
        await self.wait_closed()

    # -- DataChannel -------------------------------------------------------------------
    def _transmit(self, data: bytes) -> None:
        try:
            self._native.send_bytes(bytes(data))
        except rtc.RTCError as exc:
            # The channel closed under us; the watcher reports it.
            log.debug("webrtc event=send_failed error=%r", str(exc))

    def _buffered(self) -> int:
        try:
            return self._native.buffered_amount()
        except rtc.RTCError:
            return 0

    def _threshold_set(self, value: int) -> None:
        if self._state in ("connecting", "open"):
            with contextlib.suppress(rtc.RTCError):
                self._native.set_buffered_amount_low_threshold(value)

    def _release(self, *, local: bool, graceful: bool) -> None:
        if self._teardown_task is None:
            self._teardown_task = self._loop.create_task(self._teardown(graceful=graceful))

    # -- libdatachannel ----------------------------------------------------------------
    async def _watch(self) -> None:
        """Notice the channel closing for any reason (peer close, ICE/DTLS failure)."""
        with contextlib.suppress(rtc.RTCError):
            await self._channel.wait_closed()
        self._remote_closed()

    def _native_message(self, data: bytes | str) -> None:
        """On a libdatachannel thread: into the inbox; the loop wakes once per batch."""
        self._hold(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)

    def _native_buffered_low(self) -> None:
        """On a libdatachannel thread, with the W3C semantics (see the module doc)."""
        self._defer(self._buffered_low)

    async def _teardown(self, *, graceful: bool) -> None:
        """Tear the connection down; if ``graceful``, let it deliver what it holds first.

        The wrapper's ``close()`` deletes the native objects at once, which discards
        whatever is still queued (even a few small messages sent just before).
        libdatachannel's own close (``rtcClosePeerConnection``, reached through the
        wrapper's private ``_native``) shuts SCTP down gracefully and reports CLOSED when
        done: about a round trip plus the queued data, or ~13 s if the peer is gone, which
        :data:`CLOSE_LINGER` caps.
        """
        pc = self._pc
        try:
            if graceful and not pc.closed and pc.state is not rtc.RTCState.CLOSED:
                with contextlib.suppress(rtc.RTCError):
                    pc._native.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(CLOSE_LINGER):
                        await pc.wait_for_state(rtc.RTCState.CLOSED)
        finally:
            await pc.aclose()


if TYPE_CHECKING:

    def _is_a_transport(transport: WebRTCTransport) -> Establishing:
        return transport


# -- setting up connections -------------------------------------------------------------


async def _new_connection(
    *, loopback: bool, max_pending: int, max_pending_bytes: int, remote_offer: str | None
) -> tuple[WebRTCTransport, str]:
    """A peer connection with our channel, and its local offer (or answer) SDP.

    With ``loopback``, the ICE port is pinned so that a ``127.0.0.1`` candidate can be
    added; if libjuice cannot bind the port picked (a race with another process), the
    connection is rebuilt on another port.
    """
    attempts = _LOOPBACK_ATTEMPTS if loopback else 1
    failure: Exception | None = None
    for _ in range(attempts):
        port = _free_udp_port() if loopback else 0
        pc = rtc.PeerConnection(
            rtc.RTCConfiguration(ice_servers=[], port_range_begin=port, port_range_end=port)
        )
        try:
            channel = await pc.create_data_channel(
                LABEL, rtc.DataChannelOptions(negotiated=True, stream_id=CHANNEL_ID)
            )
            transport = WebRTCTransport(
                pc, channel, max_pending=max_pending, max_pending_bytes=max_pending_bytes
            )
            pc.spawn_task(_refuse_other_channels(pc))
            if remote_offer is not None:
                try:
                    await pc.set_remote_description(remote_offer, "offer")
                except rtc.RTCError as exc:
                    raise RemoteProtocolError(f"offer SDP rejected: {exc}") from None
                description = await pc.create_answer()
            else:
                description = await pc.create_offer()
        except rtc.RTCError as exc:
            await pc.aclose()
            failure = exc
            continue
        except BaseException:
            await pc.aclose()
            raise
        sdp = description.sdp
        if loopback:
            sdp = _with_loopback_candidate(sdp, port)
        return transport, sdp
    raise TransportError(f"could not create the local description: {failure}")


async def _refuse_other_channels(pc: rtc.PeerConnection) -> None:
    async for channel in pc.incoming_data_channels():
        log.info("webrtc event=extra_channel_refused label=%r", channel.label[:64])
        channel.close()


async def dial(
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingConnection[WebRTCTransport], str]:
    """Create a connection and our channel; return it pending, with the offer SDP.

    The SDP is complete (ICE gathering done).  ``loopback`` adds a ``127.0.0.1``
    candidate (see the module doc).  ``max_pending`` and ``max_pending_bytes`` bound the
    receive buffer.  Raises :class:`TransportError` if the offer cannot be made in time.
    """
    transport, sdp = await _local_description(
        timeout, loopback, max_pending, max_pending_bytes, None
    )
    return PendingConnection(transport, sdp), sdp


async def answer(
    offer_sdp: str,
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingConnection[WebRTCTransport], str]:
    """Apply a peer's offer; return the pending connection and our answer SDP.

    Raises :class:`~zmesh.errors.RemoteProtocolError` for an offer we cannot use and
    :class:`TransportError` if the answer cannot be produced in time.
    """
    return await answer_offer(
        offer_sdp,
        lambda: _local_description(timeout, loopback, max_pending, max_pending_bytes, offer_sdp),
    )


async def _local_description(
    timeout: float, loopback: bool, max_pending: int, max_pending_bytes: int, offer: str | None
) -> tuple[WebRTCTransport, str]:
    """:func:`_new_connection` within ``timeout`` (else :class:`TransportError`)."""
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
        raise TransportError(f"creating the {role} took over {timeout:g} s") from None
