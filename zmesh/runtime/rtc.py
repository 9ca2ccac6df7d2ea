"""What a runtime's WebRTC backend provides to the driver, and the pending connection
both backends hand out.

CPython passes :mod:`zmesh.runtime.webrtc` (libdatachannel); the browser passes its
RTCPeerConnection bridge (:class:`zmesh.runtime.browser_rtc.BrowserRtc`).  Both produce
transports with the RTCDataChannel shape, and both hand them out through a
:class:`PendingConnection`: the dialler's (our offer is out; :meth:`~PendingConnection.
complete` applies the peer's answer) or the answerer's (our answer is out;
:meth:`~PendingConnection.connected` waits for the peer).
"""

import importlib
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from ..errors import CloseCode, LocalProtocolError, RemoteProtocolError, ZMeshError
from ..link.transport import Transport
from ..signaling.sdp import channel_binding, remote_fingerprint, sdp_fingerprint

__all__ = [
    "RTC_TIMEOUT",
    "TRANSPORTS",
    "Establishing",
    "PendingConnection",
    "RtcBackend",
    "TransportError",
    "answer_offer",
    "rtc_backend",
]

RTC_TIMEOUT: Final = 10.0  # seconds for a connection to open once both SDPs are known
#: ``--transport``: what a native node dials over (D58)
TRANSPORTS: Final = ("datachannel", "media")


class TransportError(ZMeshError):
    """A WebRTC connection could not be set up, or failed."""


class Establishing(Transport, Protocol):
    """What :class:`PendingConnection` needs of a runtime's transport."""

    async def establish(self, answer_sdp: str | None, binding: bytes, timeout: float) -> None:
        """Apply the peer's answer (the dialler; ``None`` for the answerer), wait until
        the channel is open, and take ``binding`` as its ``channel_binding``.

        Raises :class:`~zmesh.errors.RemoteProtocolError` for an answer the stack refuses
        and :class:`TransportError` if the connection fails or does not open in time.
        """
        ...

    async def aclose(self) -> None:
        """Close, and wait until the underlying connection is released."""
        ...


class PendingConnection[T: Establishing]:
    """A connection whose SDP is out: :meth:`complete` (dialler) or :meth:`connected`
    (answerer) returns its transport once open; :meth:`aclose` abandons it.

    Either is called once; on any failure the connection is closed.  The transport's
    ``channel_binding`` is ``SHA-256(min(fp_a, fp_b) || max(fp_a, fp_b))`` over the two
    DTLS fingerprints, so both ends agree on it whatever their runtime.

    ``check`` reads and checks the peer's SDP (:func:`~zmesh.signaling.sdp.
    remote_fingerprint` for a data channel; the media transport passes its own).
    """

    def __init__(
        self,
        transport: T,
        local_sdp: str,
        offer_fingerprint: bytes | None = None,
        check: Callable[[str, str], bytes] = remote_fingerprint,
    ) -> None:
        """``offer_fingerprint`` is the peer's, for the answerer (None for the dialler)."""
        self._check: Final = check
        self._transport: Final = transport
        self._local: Final = sdp_fingerprint(local_sdp)
        self._remote: Final = offer_fingerprint
        self._used = False
        self._handed_over = False

    async def complete(self, answer_sdp: str, *, timeout: float = RTC_TIMEOUT) -> T:
        """The dialler's: apply the peer's answer and wait until the channel is open.

        Raises :class:`~zmesh.errors.RemoteProtocolError` for an answer we cannot use
        (malformed, an offer's DTLS role, our own fingerprint) and :class:`TransportError`
        if the connection fails or times out.
        """
        if self._remote is not None:
            raise LocalProtocolError("complete() is the dialler's: an answerer calls connected()")
        self._start("complete")
        try:
            remote = self._check(answer_sdp, "answer")
            if remote == self._local:
                raise RemoteProtocolError("the answer carries our own fingerprint", CloseCode.AUTH)
            return await self._establish(answer_sdp, remote, timeout)
        except BaseException:
            await self._transport.aclose()
            raise

    async def connected(self, *, timeout: float = RTC_TIMEOUT) -> T:
        """The answerer's: wait until the peer connects; :class:`TransportError` if not."""
        if self._remote is None:
            raise LocalProtocolError("connected() is the answerer's: a dialler calls complete()")
        self._start("connected")
        try:
            return await self._establish(None, self._remote, timeout)
        except BaseException:
            await self._transport.aclose()
            raise

    async def aclose(self) -> None:
        """Abandon the connection (a no-op once it has been handed out)."""
        self._used = True
        if not self._handed_over:
            await self._transport.aclose()

    def _start(self, what: str) -> None:
        if self._used:
            raise LocalProtocolError(f"{what}() was already called")
        self._used = True

    async def _establish(self, answer_sdp: str | None, remote: bytes, timeout: float) -> T:
        await self._transport.establish(answer_sdp, channel_binding(self._local, remote), timeout)
        self._handed_over = True
        return self._transport


async def answer_offer[T: Establishing](
    offer_sdp: str,
    create: Callable[[], Awaitable[tuple[T, str]]],
    check: Callable[[str, str], bytes] = remote_fingerprint,
) -> tuple[PendingConnection[T], str]:
    """Check a peer's offer (with ``check``), then ``create`` our side; return it pending,
    with our answer.

    Raises :class:`~zmesh.errors.RemoteProtocolError` for an offer we cannot use (checked
    before anything is created) or one that carries our own fingerprint.
    """
    remote = check(offer_sdp, "offer")
    transport, sdp = await create()
    try:
        pending = PendingConnection(transport, sdp, remote, check)
        if pending._local == remote:
            raise RemoteProtocolError("the offer carries our own fingerprint", CloseCode.AUTH)
    except BaseException:
        await transport.aclose()
        raise
    return pending, sdp


class RtcBackend(Protocol):
    """``dial()`` makes an offer; ``answer(offer)`` answers one.  Both return complete SDP."""

    async def dial(self, *, loopback: bool = ...) -> tuple[PendingConnection[Establishing], str]:
        """A new connection, pending, and our offer SDP."""
        ...

    async def answer(
        self, offer_sdp: str, *, loopback: bool = ...
    ) -> tuple[PendingConnection[Establishing], str]:
        """A new connection answering ``offer_sdp``, pending, and our answer SDP."""
        ...


def rtc_backend(transport: str) -> RtcBackend:
    """The native backend for ``--transport``: ``"datachannel"``, libdatachannel
    (:mod:`zmesh.runtime.webrtc`); ``"media"``, links inside a video track that also
    answers data channels (:class:`zmesh.runtime.media.Transports`; aiortc, the ``media``
    extra, imported only then).  LocalProtocolError for another name."""
    if transport == "media":
        backend: RtcBackend = importlib.import_module("zmesh.runtime.media").Transports()
        return backend
    if transport != "datachannel":
        raise LocalProtocolError(f"transport must be one of {', '.join(TRANSPORTS)}")
    module: RtcBackend = importlib.import_module("zmesh.runtime.webrtc")
    return module
