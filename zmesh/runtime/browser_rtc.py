"""WebRTC through the page: the browser node's side of the page's RTCPeerConnections.

Chromium offers no ``RTCPeerConnection`` in workers, so the page's main thread owns the
WebRTC connections (``web/src/rtc.js``) and the worker drives them by message through a
small JS *host* object that ``web/src/worker.js`` passes to
:func:`zmesh.runtime.browser.main`:

* :class:`BrowserRtc` is the :class:`~zmesh.runtime.rtc.RtcBackend`: ``dial`` and
  ``answer`` ask the page for an offer or answer SDP; the
  :class:`~zmesh.runtime.rtc.PendingConnection` applies the peer's SDP and waits for the
  negotiated channel (label ``"zmesh"``, id 0) to open.
* :class:`BrowserTransport` is a :class:`~zmesh.link.transport.DataChannel`: ``send``
  posts the bytes to the page; ``bufferedAmount`` mirrors what the page reports;
  ``channel_binding`` is ``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))`` over the two
  DTLS fingerprints, as :mod:`zmesh.runtime.webrtc` computes it, so native and browser
  ends agree.
* :class:`BrowserRng` is the node's :class:`~zmesh.rng.Rng` (``crypto.getRandomValues``).

The JS host is reached only through :class:`JsHost`, so everything else here imports and
runs on CPython too (the tests drive it with a fake host).
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..errors import LocalProtocolError, RemoteProtocolError
from ..link.transport import DataChannel
from ..rng import DeterministicRng
from ..shaping.media import MediaLink, media_profile
from ..signaling.sdp import MAX_MESSAGE_SIZE, local_media_offer, remote_fingerprint
from .rtc import RTC_TIMEOUT, PendingConnection, TransportError, answer_offer

if TYPE_CHECKING:
    from .rtc import Establishing

__all__ = [
    "BrowserMediaTransport",
    "BrowserRng",
    "BrowserRtc",
    "BrowserTransport",
    "Host",
    "JsHost",
    "to_bytes",
]

# -- the JS host -----------------------------------------------------------------------------


class Host(Protocol):
    """What the worker provides, in Python terms (see ``web/src/worker.js``)."""

    def rtc(self, op: str, pc: int, sdp: str | None) -> Awaitable[str | None]: ...

    def send(self, pc: int, data: bytes) -> None: ...

    def close(self, pc: int) -> None: ...

    def publish(self, status_json: str) -> None: ...

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None: ...

    def load(self, key: str) -> Awaitable[bytes | None]: ...

    def save(self, key: str, value: bytes) -> Awaitable[None]: ...

    def lock(self, name: str, wait_ms: int) -> Awaitable[bool]: ...

    def random(self, n: int) -> bytes: ...

    def media_frame(self, pc: int, frame: bytes | None) -> None: ...


def to_bytes(value: Any) -> bytes:
    """Bytes from a JS Uint8Array/ArrayBuffer proxy (or from bytes, in tests)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    convert = getattr(value, "to_bytes", None)
    return b"" if convert is None else bytes(convert())  # None, JS null or undefined: empty


class JsHost:
    """:class:`Host` over the worker's JS object: converts values at the FFI boundary."""

    def __init__(self, js: Any) -> None:
        from pyodide.ffi import to_js  # noqa: PLC0415 (exists only in Pyodide)

        self._js = js
        self._to_js = to_js

    async def rtc(self, op: str, pc: int, sdp: str | None) -> str | None:
        try:
            result = await self._js.rtc(op, pc, sdp)
        except Exception as exc:  # a rejected promise: JsException
            raise TransportError(f"the page could not {op}: {exc}") from None
        return None if result is None else str(result)

    def send(self, pc: int, data: bytes) -> None:
        self._js.send(pc, self._to_js(data))  # a copy: its ArrayBuffer is transferred

    def close(self, pc: int) -> None:
        self._js.close(pc)

    def publish(self, status_json: str) -> None:
        self._js.publish(status_json)

    def reply(self, call_id: int, ok: bool, value_json: str, body: bytes | None) -> None:
        self._js.reply(call_id, ok, value_json, None if body is None else self._to_js(body))

    async def load(self, key: str) -> bytes | None:
        value = await self._js.load(key)
        return None if getattr(value, "to_bytes", None) is None else to_bytes(value)

    async def save(self, key: str, value: bytes) -> None:
        await self._js.save(key, self._to_js(value))

    async def lock(self, name: str, wait_ms: int) -> bool:
        return bool(await self._js.lock(name, wait_ms))

    def random(self, n: int) -> bytes:
        return to_bytes(self._js.random(n))

    def media_frame(self, pc: int, frame: bytes | None) -> None:
        self._js.media_frame(pc, None if frame is None else self._to_js(frame))


class BrowserRng:
    """:class:`~zmesh.rng.Rng` over ``crypto.getRandomValues`` (not reproducible)."""

    reproducible = False
    _MAX_CALL: Final = 65536  # getRandomValues fills at most 64 KiB per call

    def __init__(self, host: Host) -> None:
        self._host = host

    def bytes(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        chunks = []
        while n > 0:
            take = min(n, self._MAX_CALL)
            chunk = self._host.random(take)
            if len(chunk) != take:
                raise RuntimeError("crypto.getRandomValues returned the wrong length")
            chunks.append(chunk)
            n -= take
        return b"".join(chunks)


# -- WebRTC through the page -----------------------------------------------------------------


class BrowserTransport(DataChannel):
    """One page-side RTCDataChannel, seen from the worker (see the module doc).

    Handed out open by a :class:`~zmesh.runtime.rtc.PendingConnection`.  The inbox, the
    fire-once ``onclose`` and :attr:`error` are
    :class:`~zmesh.link.transport.DataChannel`'s; a close the page reports sets
    :attr:`error` to its reason.
    """

    def __init__(self, rtc: "BrowserRtc", pc: int) -> None:
        super().__init__(asyncio.get_running_loop().call_soon, max_message_size=MAX_MESSAGE_SIZE)
        self._rtc = rtc
        self.pc = pc
        self._sent = 0  # bytes given to the page
        self._handed = 0  # of which the page has handed to its channel
        self._page_buffered = 0  # the channel's bufferedAmount at the page's last report
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.bytes_in = 0
        self.bytes_out = 0

    async def establish(self, answer_sdp: str | None, binding: bytes, timeout: float) -> None:
        """Have the page apply the peer's answer (dialler), then wait for the channel to
        open; :class:`~zmesh.runtime.rtc.TransportError` if either fails or times out."""
        if answer_sdp is not None:
            try:
                await asyncio.wait_for(self._rtc.host.rtc("remote", self.pc, answer_sdp), timeout)
            except TimeoutError:
                raise TransportError("the page did not apply the answer in time") from None
        await asyncio.wait([self._opened], timeout=timeout)  # never cancels it
        if not self._opened.done():
            raise TransportError(f"the data channel did not open within {timeout:g} s")
        self._opened.result()  # TransportError if it closed before opening
        self.channel_binding = binding

    async def aclose(self) -> None:
        """Close (the page releases the connection on its own)."""
        self.close()

    # -- DataChannel -------------------------------------------------------------------------
    def _transmit(self, data: bytes) -> None:
        self._sent += len(data)
        self.bytes_out += len(data)
        self._rtc.host.send(self.pc, data)

    def _buffered(self) -> int:
        return self._page_buffered + (self._sent - self._handed)

    def _release(self, *, local: bool, graceful: bool) -> None:
        self._rtc._forget(self.pc)
        if not self._opened.done():
            self._opened.set_exception(
                TransportError(f"the connection closed: {self.error or 'closed here'}")
            )
            self._opened.exception()  # retrieved: nobody may be waiting
        if local:
            self._rtc.host.close(self.pc)

    # -- events from the page ----------------------------------------------------------------
    def _on_open(self) -> None:
        if self._state == "connecting":
            self._state = "open"
            if not self._opened.done():
                self._opened.set_result(None)

    def _on_message(self, data: bytes) -> None:
        if self._state == "open":
            self.bytes_in += len(data)
            self._received(data)

    def _on_buffered(self, handed: int, amount: int) -> None:
        before = self.bufferedAmount
        self._handed = max(self._handed, handed)
        self._page_buffered = max(0, amount)
        self._buffered_changed(before)

    def _on_close(self, reason: str) -> None:
        self._remote_closed(reason)


MAX_EARLY_FRAMES: Final = 64  # frames from the peer before the link is open
CLOSE_LINGER: Final = 5.0  # seconds a closing media link may spend delivering what it has
FIN_ACK_LINGER: Final = 0.25  # seconds the peer's FIN waits for our next frame (its ack)


def _media_fingerprint(sdp: str, role: str) -> bytes:
    return remote_fingerprint(sdp, role, media=True)


class BrowserMediaTransport(BrowserTransport):
    """A page-side connection carrying the link inside the VP8 frames of a canvas track
    (D58): the page's sender transform asks for each frame it sends (``pull``, answered
    with :meth:`MediaLink.next_frame`: the encoder's cadence, the profile's sizes) and its
    receiver transform hands over each frame it receives (``frame``); nothing is decoded.
    Open once the page's connection is (its ``open`` event).  An orderly close lingers as
    the native end's does: a local one sends what is queued, then FIN, until acknowledged
    (at most CLOSE_LINGER); the peer's FIN gets one more frame, its ack; then the page
    closes the connection."""

    def __init__(self, rtc: "BrowserRtc", pc: int) -> None:
        super().__init__(rtc, pc)
        self._link: MediaLink | None = None
        self._early: list[bytes] = []
        self._linger_done: Callable[[], bool] | None = None  # set while closing in order
        self._linger_timer: asyncio.TimerHandle | None = None
        self._page_closed = False

    @property
    def link(self) -> MediaLink | None:
        return self._link

    async def establish(self, answer_sdp: str | None, binding: bytes, timeout: float) -> None:
        await super().establish(answer_sdp, binding, timeout)
        loop = asyncio.get_running_loop()
        seed = self._rtc.host.random(32)
        rng = DeterministicRng(seed, b"zmesh-media")
        self._link = MediaLink(media_profile(rng), rng, loop.time())
        early, self._early = self._early, []
        for frame in early:
            self._on_frame(frame)

    def _transmit(self, data: bytes) -> None:
        assert self._link is not None
        self.bytes_out += len(data)
        try:
            self._link.send(data)
        except LocalProtocolError as exc:  # past MAX_BUFFER: the node's window failed
            self._shut(str(exc))

    def _buffered(self) -> int:
        return self._link.buffered if self._link is not None else 0

    def _on_pull(self) -> None:
        """The sender transform wants the next frame (None: drop the encoder's)."""
        link = self._link
        lingering = self._linger_done is not None
        if link is None or (self._state not in ("open", "closing") and not lingering):
            self._rtc.host.media_frame(self.pc, None)
            return
        before = self.bufferedAmount
        self._rtc.host.media_frame(self.pc, link.next_frame(asyncio.get_running_loop().time()))
        self._buffered_changed(before)
        if self._linger_done is not None and self._linger_done():
            self._end_linger()

    def _on_frame(self, frame: bytes) -> None:
        link = self._link
        if link is None:
            if len(self._early) < MAX_EARLY_FRAMES:
                self._early.append(frame)
            return
        if self._state != "open" and self._linger_done is None:
            return
        try:
            messages = link.receive(frame, asyncio.get_running_loop().time())
        except RemoteProtocolError as exc:
            self._shut(str(exc))
            return
        for message in messages:
            self.bytes_in += len(message)
            self._received(message)
        if link.peer_finished:
            self._remote_closed()

    def _on_message(self, data: bytes) -> None:
        pass  # no data channel

    def _on_buffered(self, handed: int, amount: int) -> None:
        pass  # bufferedAmount is the link's

    def _on_close(self, reason: str) -> None:
        self._page_closed = True  # nothing more can be sent: no lingering
        super()._on_close(reason)

    def _release(self, *, local: bool, graceful: bool) -> None:
        link = self._link
        if link is None or not graceful or self._page_closed or self._linger_done is not None:
            self._stop_linger()
            super()._release(local=local or not self._page_closed, graceful=graceful)
            return
        if local:  # deliver what we hold: FIN, acknowledged
            link.finish()
            self._linger_done = lambda: link.done
            linger = CLOSE_LINGER
        else:  # the peer finished: one more frame acknowledges its FIN
            sent = link.frames_sent
            self._linger_done = lambda: link.frames_sent > sent
            linger = FIN_ACK_LINGER
        self._linger_timer = asyncio.get_running_loop().call_later(linger, self._end_linger)

    def _end_linger(self) -> None:
        if self._linger_done is None:
            return
        self._stop_linger()
        super()._release(local=True, graceful=False)  # the page closes the connection

    def _stop_linger(self) -> None:
        self._linger_done = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None


if TYPE_CHECKING:

    def _is_a_transport(transport: BrowserTransport) -> Establishing:
        return transport


class BrowserRtc:
    """The :class:`~zmesh.runtime.rtc.RtcBackend` of a browser node (``loopback`` is
    ignored: the browser gathers its own candidates).

    ``stun`` names the STUN servers (``stun:host:port`` URIs, :func:`~zmesh.runtime.stun.
    stun_servers`) for the page's next connections: before each new connection, a list
    that changed is sent to the page (op ``ice``), so tabs that hide their addresses
    behind mDNS names learn reflexive candidates from the mesh's own nodes (D50)."""

    def __init__(
        self, host: Host, stun: Callable[[], list[str]] = list, *, media: bool = False
    ) -> None:
        self.host = host
        self.media = media  # dial over the media transport (D58)
        self._stun = stun
        self._ice_sent: list[str] = []
        self._conns: dict[int, BrowserTransport] = {}
        self._next = 1

    async def dial(
        self, *, loopback: bool = False
    ) -> tuple[PendingConnection[BrowserTransport], str]:
        """A new connection, pending, and the page's offer SDP (:class:`TransportError`
        if the page does not make one in time)."""
        if not self.media:
            transport, sdp = await self._local_description("dial", None)
            return PendingConnection(transport, sdp), sdp
        media, created = await self._local_description("mdial", None, media=True)
        try:
            munged = local_media_offer(created)
            local = await asyncio.wait_for(self.host.rtc("mlocal", media.pc, munged), RTC_TIMEOUT)
        except (TimeoutError, LocalProtocolError) as exc:
            media.close()
            raise TransportError(f"the page did not make a media offer: {exc!r}") from None
        except BaseException:
            media.close()
            raise
        if not local:
            media.close()
            raise TransportError("the page returned no SDP for its media offer")
        return PendingConnection(media, local, None, _media_fingerprint), local

    async def answer(
        self, offer_sdp: str, *, loopback: bool = False
    ) -> tuple[PendingConnection[BrowserTransport], str]:
        """A new connection answering ``offer_sdp``, pending, and the page's answer SDP.

        :class:`~zmesh.errors.RemoteProtocolError` for an offer we cannot use,
        :class:`TransportError` if the page does not answer in time."""
        return await answer_offer(offer_sdp, lambda: self._local_description("answer", offer_sdp))

    async def push_dial(self, request_json: str) -> tuple[BrowserTransport, str]:
        """A new connection dialled by push (D54): the page makes an offer with its stored
        certificate and the pushed ICE credentials, applies the pushed answer, and returns
        its local SDP (``request_json``: ``{ufrag, pwd, answer}``).  :class:`TransportError`
        if the page cannot, or not in time."""
        return await self._local_description("pushdial", request_json)

    def on_event(self, pc: int, ev: str, data: bytes, handed: int, amount: int) -> None:
        """An event from the page for connection ``pc`` (see ``web/src/rtc.js``)."""
        transport = self._conns.get(pc)
        if transport is None:
            return
        if ev == "message":
            transport._on_message(data)
        elif ev == "frame" and isinstance(transport, BrowserMediaTransport):
            transport._on_frame(data)
        elif ev == "pull" and isinstance(transport, BrowserMediaTransport):
            transport._on_pull()
        elif ev == "open":
            transport._on_open()
        elif ev == "buffered":
            transport._on_buffered(handed, amount)
        elif ev == "close":
            transport._on_close(data.decode("utf-8", "replace") or "closed by the page")

    def transports(self) -> list[BrowserTransport]:
        return list(self._conns.values())

    def _new(self, *, media: bool = False) -> BrowserTransport:
        pc = self._next
        self._next += 1
        transport = BrowserMediaTransport(self, pc) if media else BrowserTransport(self, pc)
        self._conns[pc] = transport
        return transport

    def _forget(self, pc: int) -> None:
        self._conns.pop(pc, None)

    async def _local_description(
        self, op: str, sdp: str | None, *, media: bool = False
    ) -> tuple[BrowserTransport, str]:
        """A new connection and the page's SDP for it (``op`` is ``dial``, ``answer`` or
        ``mdial``: a media connection's created, not yet local, offer)."""
        transport = self._new(media=media)
        try:
            servers = self._stun()
            if servers != self._ice_sent:
                await asyncio.wait_for(self.host.rtc("ice", 0, json.dumps(servers)), RTC_TIMEOUT)
                self._ice_sent = servers
            local = await asyncio.wait_for(self.host.rtc(op, transport.pc, sdp), RTC_TIMEOUT)
        except TimeoutError:
            transport.close()
            raise TransportError(f"the page did not {op} within {RTC_TIMEOUT:g} s") from None
        except BaseException:
            transport.close()
            raise
        if not local:
            transport.close()
            raise TransportError(f"the page returned no SDP for {op}")
        return transport, local
