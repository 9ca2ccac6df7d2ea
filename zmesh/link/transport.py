"""The transport interface: the shape of a W3C RTCDataChannel, and the base that every
transport builds on.

Browsers have this API natively; native and simulated transports mirror it, so one link
driver fits every runtime.  The core never calls a transport: drivers move bytes between
a transport and :class:`~zmesh.node.Node`.

:class:`DataChannel` holds what the native (:mod:`zmesh.runtime.webrtc`), browser
(:mod:`zmesh.runtime.browser_rtc`) and simulated (:mod:`zmesh.sim.transport`) transports
share: the W3C surface (``readyState``, ``bufferedAmount``, ``bufferedAmountLowThreshold``,
``onopen``/``onmessage``/``onclose``/``onbufferedamountlow``), the bounded inbox and the
fire-once close.  It does no I/O and starts no thread: a runtime passes ``defer``, which
runs a callback soon on the driver's thread (``loop.call_soon``, ``call_soon_threadsafe``
or the simulator's scheduler), and a ``lock`` if messages arrive on other threads.

The inbox holds messages received but not yet delivered to ``onmessage``: those that
arrive while ``onmessage`` is ``None`` (between the channel opening and the driver
attaching) and, for a runtime whose messages arrive on another thread, everything until
the driver's thread delivers it.  It is bounded by ``max_pending`` messages and
``max_pending_bytes`` bytes; a peer that exceeds either is hostile or broken (the node's
credit flow control keeps an honest one far below), and the channel closes with
:attr:`DataChannel.error` set.  At most :data:`DELIVERY_BATCH` messages are delivered per
deferred call, so one busy channel does not starve the others.

``onclose`` fires exactly once, after every message received before the close was
delivered (a local :meth:`DataChannel.close` drops undelivered messages instead).
"""

import contextlib
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal, Protocol

from ..errors import LocalProtocolError

__all__ = [
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_PENDING_BYTES",
    "DELIVERY_BATCH",
    "DataChannel",
    "Defer",
    "ReadyState",
    "Transport",
]

log = logging.getLogger("zmesh.transport")

ReadyState = Literal["connecting", "open", "closing", "closed"]
#: runs a callback soon, on the thread that drives the transport
Defer = Callable[[Callable[[], None]], object]

DEFAULT_MAX_PENDING: Final = 4096
DEFAULT_MAX_PENDING_BYTES: Final = 64 << 20
DELIVERY_BATCH: Final = 256


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


class DataChannel(ABC):
    """An RTCDataChannel-shaped transport: the W3C surface, the bounded inbox and the
    fire-once close (see the module doc).

    A subclass moves the bytes: :meth:`_transmit` sends one message, :meth:`_buffered`
    says how many bytes wait to be sent, :meth:`_release` lets go of the underlying
    channel.  It reports what happens underneath with :meth:`_received` (on the driver's
    thread) or :meth:`_hold` (on any thread), :meth:`_buffered_changed` and
    :meth:`_remote_closed`.

    Sending on a channel that is not open does nothing, as in browsers.  :attr:`error`
    says why a channel closed on its own (``None`` for an orderly close).
    """

    def __init__(
        self,
        defer: Defer,
        *,
        max_message_size: int,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        lock: contextlib.AbstractContextManager[Any] | None = None,
    ) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` for bounds that could not hold
        one message of ``max_message_size`` bytes."""
        if max_pending < 1 or max_pending_bytes < max_message_size:
            raise LocalProtocolError(
                f"max_pending must be >= 1, max_pending_bytes >= {max_message_size}"
            )
        self._defer = defer
        self._max_message_size = max_message_size
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        # Guards the inbox and the flags below when messages arrive on another thread.
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._state: ReadyState = "connecting"
        self._threshold = 0
        self.channel_binding = b""
        self.error: str | None = None
        self.onopen: Callable[[], None] | None = None
        self.onbufferedamountlow: Callable[[], None] | None = None
        self._onmessage: Callable[[bytes], None] | None = None
        self._onclose: Callable[[], None] | None = None
        self._inbox: deque[bytes] = deque()
        self._inbox_bytes = 0
        self._accepting = True  # False once closing: later messages are dropped
        self._drain_scheduled = False
        self._close_due = False  # onclose should fire (once a handler is set)
        self._close_fired = False

    # -- what a subclass provides ----------------------------------------------------------
    @abstractmethod
    def _transmit(self, data: bytes) -> None:
        """Send one message (the channel is open and ``data`` is within the size limit)."""

    @abstractmethod
    def _buffered(self) -> int:
        """Bytes accepted by :meth:`send` and not yet handed to the network."""

    @abstractmethod
    def _release(self, *, local: bool, graceful: bool) -> None:
        """Let go of the underlying channel; called once, when this channel starts to close.

        ``local``: :meth:`close` (or an overflow) closed it, so the peer must be told;
        otherwise it closed underneath.  ``graceful``: what was sent may still be
        delivered (no error, and the channel was open).
        """

    def _threshold_set(self, value: int) -> None:  # noqa: B027 (optional hook)
        """``bufferedAmountLowThreshold`` changed (a hook for a native channel)."""

    # -- the RTCDataChannel surface --------------------------------------------------------
    @property
    def readyState(self) -> ReadyState:  # noqa: N802 (W3C name)
        return self._state

    @property
    def bufferedAmount(self) -> int:  # noqa: N802
        return self._buffered() if self._state == "open" else 0

    @property
    def bufferedAmountLowThreshold(self) -> int:  # noqa: N802
        return self._threshold

    @bufferedAmountLowThreshold.setter
    def bufferedAmountLowThreshold(self, value: int) -> None:  # noqa: N802
        if value < 0:
            raise LocalProtocolError("bufferedAmountLowThreshold must not be negative")
        self._threshold = value
        self._threshold_set(value)

    @property
    def onmessage(self) -> Callable[[bytes], None] | None:
        return self._onmessage

    @onmessage.setter
    def onmessage(self, handler: Callable[[bytes], None] | None) -> None:
        self._onmessage = handler
        if handler is not None and self._inbox:
            self._schedule_drain()

    @property
    def onclose(self) -> Callable[[], None] | None:
        return self._onclose

    @onclose.setter
    def onclose(self, handler: Callable[[], None] | None) -> None:
        self._onclose = handler
        if handler is not None and self._close_due and not self._close_fired:
            self._defer(self._fire_close)

    def send(self, data: bytes) -> None:
        """Send one message now; never waits (watch :attr:`bufferedAmount`).

        Does nothing unless the channel is open.  Raises
        :class:`~zmesh.errors.LocalProtocolError` for a message above the size limit.
        """
        if len(data) > self._max_message_size:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds the {self._max_message_size}-byte limit"
            )
        if self._state == "open":
            self._transmit(data)

    def close(self) -> None:
        """Close now: ``readyState`` becomes ``"closed"``, undelivered received messages are
        dropped, and ``onclose`` fires soon after (once)."""
        self._shut(None)

    # -- reports from the subclass ---------------------------------------------------------
    def _received(self, message: bytes) -> None:
        """A message arrived, on the driver's thread: deliver it now if nothing is waiting
        and a handler is set; otherwise hold it."""
        handler = self._onmessage
        if handler is not None and not self._inbox and self._accepting:
            handler(message)
        else:
            self._hold(message)

    def _hold(self, message: bytes) -> None:
        """A message arrived (on any thread): queue it for delivery, within the bounds.

        Exceeding a bound sets :attr:`error` and stops the inbox at once; the channel
        closes from the driver's thread, dropping what is held.
        """
        with self._lock:
            if not self._accepting:
                return
            if (
                len(self._inbox) >= self._max_pending
                or self._inbox_bytes + len(message) > self._max_pending_bytes
            ):
                self._accepting = False
                if self.error is None:
                    self.error = (
                        f"receive buffer overflow: the peer exceeded {self._max_pending} "
                        f"messages or {self._max_pending_bytes} bytes not yet delivered"
                    )
                callback = self._overflowed
            else:
                self._inbox.append(message)
                self._inbox_bytes += len(message)
                if self._drain_scheduled or self._onmessage is None:
                    return
                self._drain_scheduled = True
                callback = self._drain
        self._defer(callback)

    def _buffered_changed(self, before: int) -> None:
        """:attr:`bufferedAmount` moved from ``before``: fire ``onbufferedamountlow`` if it
        fell from above the threshold to at or below it (the W3C rule)."""
        if before > self._threshold >= self.bufferedAmount:
            self._buffered_low()

    def _buffered_low(self) -> None:
        """The amount fell to the threshold (a native channel reports this itself)."""
        if self._state == "open" and self.onbufferedamountlow is not None:
            self.onbufferedamountlow()

    def _remote_closed(self, reason: str | None = None) -> None:
        """The channel closed underneath (the peer, or a failure): deliver what was
        received, then fire ``onclose``.  ``reason`` becomes :attr:`error`."""
        with self._lock:
            self._accepting = False
        if self._state not in ("connecting", "open"):
            return
        if reason is not None and self.error is None:
            self.error = reason
        self._state = "closing"
        self._release(local=False, graceful=True)
        if not self._inbox:
            self._finish()
        elif self._onmessage is not None:
            self._schedule_drain()

    # -- internals -------------------------------------------------------------------------
    def _shut(self, error: str | None) -> None:
        """Close now, dropping undelivered messages; ``error`` says why (None: orderly)."""
        with self._lock:
            self._accepting = False
            self._inbox.clear()
            self._inbox_bytes = 0
        if self._state == "closed":
            return
        graceful = error is None and self._state == "open"
        if error is not None and self.error is None:
            self.error = error
        first = self._state != "closing"  # a closing channel was released already
        self._finish()
        if first:
            self._release(local=True, graceful=graceful)

    def _overflowed(self) -> None:
        log.warning("transport event=overflow error=%r", self.error)
        self._shut(self.error)

    def _schedule_drain(self) -> None:
        with self._lock:
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        self._defer(self._drain)

    def _drain(self) -> None:
        """Deliver up to :data:`DELIVERY_BATCH` held messages; then close, if closing."""
        with self._lock:
            self._drain_scheduled = False
        if self._closed():
            return
        delivered = 0
        try:
            while self._inbox and delivered < DELIVERY_BATCH:
                handler = self._onmessage
                if handler is None or self._closed():
                    return
                with self._lock:
                    message = self._inbox.popleft()
                    self._inbox_bytes -= len(message)
                delivered += 1
                handler(message)  # may close this channel
        finally:
            if not self._closed():
                if self._inbox:
                    if self._onmessage is not None:
                        self._schedule_drain()
                elif self._state == "closing":
                    self._finish()

    def _closed(self) -> bool:
        return self._state == "closed"  # a method: a handler may close the channel

    def _finish(self) -> None:
        self._state = "closed"
        self._close_due = True
        self._defer(self._fire_close)

    def _fire_close(self) -> None:
        handler = self._onclose
        if self._close_fired or handler is None:
            return
        self._close_fired = True
        handler()
