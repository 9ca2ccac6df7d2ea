"""The transport interface: the shape of a W3C RTCDataChannel.

Browsers have this API natively; native and simulated transports mirror it, so one link
driver fits every runtime.  The core never calls a transport: drivers move bytes between
a transport and :class:`~zmesh.node.Node`.
"""

from collections.abc import Callable
from typing import Literal, Protocol

ReadyState = Literal["connecting", "open", "closing", "closed"]


class Transport(Protocol):
    """A reliable, ordered, message-oriented channel to one peer."""

    @property
    def readyState(self) -> ReadyState: ...  # noqa: N802 (W3C name)

    @property
    def bufferedAmount(self) -> int: ...  # noqa: N802

    bufferedAmountLowThreshold: int  # noqa: N815 (W3C name)
    #: hash of both ends' transport credentials (DTLS fingerprints for WebRTC)
    channel_binding: bytes
    onopen: Callable[[], None] | None
    onmessage: Callable[[bytes], None] | None
    onclose: Callable[[], None] | None
    onbufferedamountlow: Callable[[], None] | None

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...
