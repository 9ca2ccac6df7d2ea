"""What a runtime's WebRTC backend provides to the driver.

CPython passes :mod:`zmesh.runtime.webrtc` (libdatachannel); the browser passes its
RTCPeerConnection bridge.  Both produce transports with the RTCDataChannel shape.
"""

from typing import Protocol

from ..link.transport import Transport
from .sdp import TransportError

__all__ = ["PendingAnswer", "PendingDial", "RtcBackend", "TransportError"]


class PendingDial(Protocol):
    async def complete(self, answer_sdp: str, *, timeout: float = ...) -> Transport: ...

    async def aclose(self) -> None: ...


class PendingAnswer(Protocol):
    async def connected(self, *, timeout: float = ...) -> Transport: ...

    async def aclose(self) -> None: ...


class RtcBackend(Protocol):
    """``dial()`` makes an offer; ``answer(offer)`` answers one.  Both return complete SDP."""

    async def dial(self, *, loopback: bool = ...) -> tuple[PendingDial, str]: ...

    async def answer(
        self, offer_sdp: str, *, loopback: bool = ...
    ) -> tuple[PendingAnswer, str]: ...
