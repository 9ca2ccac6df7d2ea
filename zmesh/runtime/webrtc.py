"""Native WebRTC transport: libdatachannel data channels behind the RTCDataChannel shape.

One :class:`WebRTCTransport` is one ``RTCPeerConnection`` (ICE, DTLS, SCTP) carrying one
reliable, ordered data channel.  The dialler calls :func:`dial`, ships the offer SDP to
the peer, and hands the answer to :meth:`PendingDial.complete`; the peer calls
:func:`answer` and waits on :meth:`PendingAnswer.connected`.  Offers and answers are
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
  from libdatachannel's thread into this transport's own buffer (one loop wake-up per
  batch), and ``onmessage`` is called from there; the same load loses nothing.  This
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
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import aiolibdatachannel as rtc

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError
from ..link.transport import ReadyState
from .sdp import (
    CHANNEL_ID,
    LABEL,
    MAX_MESSAGE_SIZE,
    CompactSdp,
    TransportError,
    channel_binding,
    remote_fingerprint,
    sdp_fingerprint,
)

if TYPE_CHECKING:
    from ..link.transport import Transport

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "LABEL",
    "MAX_MESSAGE_SIZE",
    "CompactSdp",
    "PendingAnswer",
    "PendingDial",
    "TransportError",
    "WebRTCTransport",
    "answer",
    "dial",
    "sdp_fingerprint",
]

log = logging.getLogger("zmesh.webrtc")

DEFAULT_MAX_PENDING: Final = 4096
DEFAULT_MAX_PENDING_BYTES: Final = 64 << 20
_DELIVERY_BATCH: Final = 256
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


class WebRTCTransport:
    """One end of a data channel, shaped like an ``RTCDataChannel`` (see the module doc).

    Obtained from :meth:`PendingDial.complete` or :meth:`PendingAnswer.connected`, already
    open.  ``send`` is synchronous and never waits: watch :attr:`bufferedAmount` and
    ``onbufferedamountlow`` for backpressure.  Sending on a transport that is not open
    does nothing (like :class:`~zmesh.sim.network.MemoryTransport`).  ``onclose`` fires
    once, after every message received before the close was delivered; a local
    :meth:`close` drops undelivered messages.  :attr:`error` says why a transport closed
    on its own (``None`` for an orderly close).  ``onopen`` is never called: the
    transport is handed out open.
    """

    def __init__(
        self,
        pc: rtc.PeerConnection,
        channel: rtc.DataChannel,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
    ) -> None:
        if max_pending < 1 or max_pending_bytes < MAX_MESSAGE_SIZE:
            raise LocalProtocolError("max_pending must be >= 1, max_pending_bytes >= 256 KiB")
        self._loop = asyncio.get_running_loop()
        self._pc = pc
        self._channel = channel
        # The wrapper's private native handle: see the module doc for why.
        self._native = channel._native
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._state: ReadyState = "connecting"
        self._threshold = 0
        self._max_message_size = MAX_MESSAGE_SIZE
        self.channel_binding = b""
        self.error: str | None = None
        self.onopen: Callable[[], None] | None = None
        self.onbufferedamountlow: Callable[[], None] | None = None
        self._onmessage: Callable[[bytes], None] | None = None
        self._onclose: Callable[[], None] | None = None
        self._close_due = False  # onclose should fire once the inbox is empty
        self._close_fired = False
        self._watcher: asyncio.Task[None] | None = None
        self._teardown_task: asyncio.Task[None] | None = None
        # Received, not yet delivered.  libdatachannel's threads append; the loop pops.
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._inbox_lock = threading.Lock()
        self._drain_scheduled = False
        self._accepting = True
        self._native.set_on_message(self._native_message)
        self._native.set_on_buffered_amount_low(self._native_buffered_low)

    # -- the RTCDataChannel surface ---------------------------------------------------
    @property
    def readyState(self) -> ReadyState:  # noqa: N802 (W3C name)
        return self._state

    @property
    def bufferedAmount(self) -> int:  # noqa: N802
        if self._state != "open":
            return 0
        try:
            return self._native.buffered_amount()
        except rtc.RTCError:
            return 0

    @property
    def bufferedAmountLowThreshold(self) -> int:  # noqa: N802
        return self._threshold

    @bufferedAmountLowThreshold.setter
    def bufferedAmountLowThreshold(self, value: int) -> None:  # noqa: N802
        if value < 0:
            raise LocalProtocolError("bufferedAmountLowThreshold must not be negative")
        self._threshold = value
        if self._state in ("connecting", "open"):
            with contextlib.suppress(rtc.RTCError):
                self._native.set_buffered_amount_low_threshold(value)

    @property
    def onmessage(self) -> Callable[[bytes], None] | None:
        return self._onmessage

    @onmessage.setter
    def onmessage(self, handler: Callable[[bytes], None] | None) -> None:
        self._onmessage = handler
        if handler is not None and self._inbox:
            self._schedule_drain(threadsafe=False)

    @property
    def onclose(self) -> Callable[[], None] | None:
        return self._onclose

    @onclose.setter
    def onclose(self, handler: Callable[[], None] | None) -> None:
        self._onclose = handler
        if handler is not None and self._close_due and not self._close_fired:
            self._loop.call_soon(self._fire_close)

    def send(self, data: bytes) -> None:
        """Hand ``data`` to libdatachannel now; never waits (see :attr:`bufferedAmount`)."""
        if len(data) > self._max_message_size:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds the {self._max_message_size}-byte limit"
            )
        if self._state != "open":
            return
        try:
            self._native.send_bytes(bytes(data))
        except rtc.RTCError as exc:
            # The channel closed under us; the watcher reports it.
            log.debug("webrtc event=send_failed error=%r", str(exc))

    def close(self) -> None:
        """Close now: ``readyState`` becomes ``"closed"`` and ``onclose`` fires soon after.

        Messages already passed to :meth:`send` are still delivered: the connection shuts
        down gracefully (SCTP SHUTDOWN) in the background, for at most
        :data:`CLOSE_LINGER` seconds, then is torn down.  Undelivered received messages
        are dropped.
        """
        self._shut(None)

    # -- extras ------------------------------------------------------------------------
    async def wait_closed(self) -> None:
        """Wait until the native connection is torn down (after a close)."""
        if self._teardown_task is not None:
            await asyncio.shield(self._teardown_task)
        await self._pc.wait_closed()

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    # -- internals ----------------------------------------------------------------------
    def _opened(self, local_fingerprint: bytes, remote_fingerprint: bytes) -> None:
        self.channel_binding = channel_binding(local_fingerprint, remote_fingerprint)
        with contextlib.suppress(rtc.RTCError):
            self._max_message_size = min(MAX_MESSAGE_SIZE, self._channel.max_message_size)
        if self._state == "connecting":
            self._state = "open"
        self._watcher = self._loop.create_task(self._watch())

    async def _watch(self) -> None:
        """Notice the channel closing for any reason (peer close, ICE/DTLS failure)."""
        with contextlib.suppress(rtc.RTCError):
            await self._channel.wait_closed()
        self._remote_closed()

    def _native_message(self, data: bytes | str) -> None:
        """On a libdatachannel thread: buffer the message, wake the loop once per batch."""
        message = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        with self._inbox_lock:
            if not self._accepting:
                return
            if (
                len(self._inbox) >= self._max_pending
                or self._inbox_bytes + len(message) > self._max_pending_bytes
            ):
                self._accepting = False
                overflow = True
            else:
                overflow = False
                self._inbox.append(message)
                self._inbox_bytes += len(message)
                if self._drain_scheduled:
                    return
                self._drain_scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            if overflow:
                self._loop.call_soon_threadsafe(self._overflowed)
            else:
                self._loop.call_soon_threadsafe(self._drain)

    def _native_buffered_low(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._buffered_low)

    def _buffered_low(self) -> None:
        if self._state == "open" and self.onbufferedamountlow is not None:
            self.onbufferedamountlow()

    def _schedule_drain(self, *, threadsafe: bool) -> None:
        with self._inbox_lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        if threadsafe:
            self._loop.call_soon_threadsafe(self._drain)
        else:
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        with self._inbox_lock:
            self._drain_scheduled = False
        if self._closed():
            return
        delivered = 0
        try:
            while self._inbox and delivered < _DELIVERY_BATCH:
                handler = self._onmessage
                if handler is None or self._closed():
                    return
                with self._inbox_lock:
                    message = self._inbox.popleft()
                    self._inbox_bytes -= len(message)
                delivered += 1
                handler(message)
        finally:
            if not self._closed():
                if self._inbox:
                    if self._onmessage is not None:
                        self._schedule_drain(threadsafe=False)
                elif self._state == "closing":
                    self._finish()

    def _closed(self) -> bool:
        return self._state == "closed"

    def _overflowed(self) -> None:
        if self._state in ("connecting", "open", "closing"):
            self.error = (
                f"receive buffer overflow: the peer exceeded {self._max_pending} messages "
                f"or {self._max_pending_bytes} bytes not yet delivered"
            )
            log.warning("webrtc event=overflow error=%r", self.error)
            self._shut(self.error)

    def _remote_closed(self) -> None:
        """The channel closed on its own: deliver what was received, then report."""
        with self._inbox_lock:
            self._accepting = False
        if self._state not in ("connecting", "open"):
            return
        self._state = "closing"
        self._start_teardown(graceful=True)
        if not self._inbox:
            self._finish()
        elif self._onmessage is not None:
            self._schedule_drain(threadsafe=False)

    def _shut(self, error: str | None) -> None:
        """Close now, dropping undelivered messages."""
        with self._inbox_lock:
            self._accepting = False
        if self._state == "closed":
            return
        graceful = error is None and self._state == "open"
        if error is not None:
            self.error = error
        with self._inbox_lock:
            self._inbox.clear()
            self._inbox_bytes = 0
        self._start_teardown(graceful=graceful)
        self._finish()

    def _start_teardown(self, *, graceful: bool) -> None:
        if self._teardown_task is None:
            self._teardown_task = self._loop.create_task(self._teardown(graceful=graceful))

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

    def _finish(self) -> None:
        self._state = "closed"
        self._close_due = True
        self._loop.call_soon(self._fire_close)

    def _fire_close(self) -> None:
        handler = self._onclose
        if self._close_fired or handler is None:
            return
        self._close_fired = True
        handler()


if TYPE_CHECKING:

    def _is_a_transport(transport: WebRTCTransport) -> Transport:
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
    if max_pending < 1 or max_pending_bytes < MAX_MESSAGE_SIZE:
        raise LocalProtocolError("max_pending must be >= 1, max_pending_bytes >= 256 KiB")
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


async def _wait_open(
    transport: WebRTCTransport, timeout: float, answer_sdp: str | None = None
) -> None:
    """Apply the peer's answer (dialler), then wait for the channel to open."""
    try:
        async with asyncio.timeout(timeout):
            if answer_sdp is not None:
                try:
                    await transport._pc.set_remote_description(answer_sdp, "answer")
                except rtc.RTCError as exc:
                    raise RemoteProtocolError(f"answer SDP rejected: {exc}") from None
            await transport._channel.wait_open()
    except TimeoutError:
        raise TransportError(f"the data channel did not open within {timeout:g} s") from None
    except rtc.RTCError as exc:
        raise TransportError(f"the WebRTC connection failed: {exc}") from None


class PendingDial:
    """Our offer is out; :meth:`complete` applies the peer's answer."""

    def __init__(self, transport: WebRTCTransport, local_sdp: str) -> None:
        self._transport = transport
        self._local_fingerprint = sdp_fingerprint(local_sdp)
        self._used = False
        self._handed_over = False

    async def complete(self, answer_sdp: str, *, timeout: float = 10.0) -> WebRTCTransport:
        """Apply the answer and wait until the channel is open.

        Raises :class:`~zmesh.errors.RemoteProtocolError` for an answer we cannot use and
        :class:`TransportError` if the connection fails or times out.  On any failure the
        pending connection is closed.
        """
        if self._used:
            raise LocalProtocolError("complete() was already called")
        self._used = True
        transport = self._transport
        try:
            remote = remote_fingerprint(answer_sdp, "answer")
            if remote == self._local_fingerprint:
                raise RemoteProtocolError("the answer carries our own fingerprint", CloseCode.AUTH)
            await _wait_open(transport, timeout, answer_sdp)
        except BaseException:
            await transport.aclose()
            raise
        transport._opened(self._local_fingerprint, remote)
        self._handed_over = True
        return transport

    async def aclose(self) -> None:
        """Abandon the dial (no-op once :meth:`complete` has returned a transport)."""
        self._used = True
        if not self._handed_over:
            await self._transport.aclose()


class PendingAnswer:
    """Our answer is out; :meth:`connected` waits for the peer to connect."""

    def __init__(self, transport: WebRTCTransport, local_sdp: str, remote: bytes) -> None:
        self._transport = transport
        self._local_fingerprint = sdp_fingerprint(local_sdp)
        self._remote_fingerprint = remote
        self._used = False
        self._handed_over = False

    async def connected(self, *, timeout: float = 10.0) -> WebRTCTransport:
        """Wait until the channel is open; :class:`TransportError` (and closed) if not."""
        if self._used:
            raise LocalProtocolError("connected() was already called")
        self._used = True
        transport = self._transport
        try:
            await _wait_open(transport, timeout)
        except BaseException:
            await transport.aclose()
            raise
        transport._opened(self._local_fingerprint, self._remote_fingerprint)
        self._handed_over = True
        return transport

    async def aclose(self) -> None:
        """Abandon the answer (no-op once :meth:`connected` has returned a transport)."""
        self._used = True
        if not self._handed_over:
            await self._transport.aclose()


async def dial(
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingDial, str]:
    """Create a connection and our channel; return it pending, with the offer SDP.

    The SDP is complete (ICE gathering done).  ``loopback`` adds a ``127.0.0.1``
    candidate (see the module doc).  ``max_pending`` and ``max_pending_bytes`` bound the
    receive buffer.
    """
    try:
        async with asyncio.timeout(timeout):
            transport, sdp = await _new_connection(
                loopback=loopback,
                max_pending=max_pending,
                max_pending_bytes=max_pending_bytes,
                remote_offer=None,
            )
    except TimeoutError:
        raise TransportError(f"creating the offer took over {timeout:g} s") from None
    return PendingDial(transport, sdp), sdp


async def answer(
    offer_sdp: str,
    *,
    timeout: float = 10.0,
    loopback: bool = False,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
) -> tuple[PendingAnswer, str]:
    """Apply a peer's offer; return the pending connection and our answer SDP.

    Raises :class:`~zmesh.errors.RemoteProtocolError` for an offer we cannot use and
    :class:`TransportError` if the answer cannot be produced in time.
    """
    remote = remote_fingerprint(offer_sdp, "offer")
    try:
        async with asyncio.timeout(timeout):
            transport, sdp = await _new_connection(
                loopback=loopback,
                max_pending=max_pending,
                max_pending_bytes=max_pending_bytes,
                remote_offer=offer_sdp,
            )
    except TimeoutError:
        raise TransportError(f"creating the answer took over {timeout:g} s") from None
    if sdp_fingerprint(sdp) == remote:
        await transport.aclose()
        raise RemoteProtocolError("the offer carries our own fingerprint", CloseCode.AUTH)
    return PendingAnswer(transport, sdp, remote), sdp
