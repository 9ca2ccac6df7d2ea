"""The simulator's links: :class:`MemoryTransport` pairs with the RTCDataChannel shape.

A message is serialized at the link's bandwidth, arrives after its latency, and, when
lost, after an extra RTO, holding back the ones behind it (a reliable, ordered channel,
as SCTP gives).  Every callback runs from the simulator's event heap, in virtual time.
Each end carries its own :class:`LinkModel` (:attr:`MemoryTransport.model`), which may
change at any time; messages already sent keep the timing they were given.

The faults of :mod:`zmesh.sim.faults` act on the way to the peer, when a message is due
to arrive (:meth:`~zmesh.sim.network.Simulator.route` decides):

* across a partition a message is *held*, in order, with everything behind it, and
  delivered one latency after the partition heals (SCTP keeps retransmitting).  An end
  holds at most :data:`MAX_HELD` messages and :data:`MAX_HELD_BYTES` bytes; past that the
  association gives up (SCTP's retransmission limit) and the end closes with an error;
* to or from a blackholed node a message is *dropped*, and so is a close: the peers
  notice only when their keepalives time out;
* :meth:`MemoryTransport.close` is orderly: what was sent still arrives, then the peer
  sees the close; :meth:`MemoryTransport.abort` (a crash) loses whatever is in flight and
  the peer sees the close one latency later (an SCTP ABORT);
* :attr:`MemoryTransport.tamper` rewrites or withholds what this end sends (a malicious
  relay, or a middlebox).
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..errors import LocalProtocolError
from ..link.transport import DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES, DataChannel
from ..rng import randbelow
from ..signaling.sdp import MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from .network import Simulator

__all__ = ["MAX_HELD", "MAX_HELD_BYTES", "LinkModel", "MemoryTransport", "Tamper"]

#: messages one end holds across a partition before the association gives up
MAX_HELD: Final = DEFAULT_MAX_PENDING
#: bytes one end holds across a partition before the association gives up
MAX_HELD_BYTES: Final = DEFAULT_MAX_PENDING_BYTES

#: rewrites a message one end sends, or withholds it (returns None)
Tamper = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class LinkModel:
    """How one direction of a link carries messages."""

    latency: float = 0.010  # one way, seconds
    bandwidth: float = 12.5e6  # bytes per second (100 Mbit/s)
    loss: float = 0.0  # probability that a message needs a retransmission
    rto: float = 0.200  # extra delay for a lost message

    def __post_init__(self) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` for a model no link could have."""
        if not (self.latency >= 0 and self.bandwidth > 0 and self.rto >= 0):
            raise LocalProtocolError("latency and rto must be >= 0, bandwidth > 0")
        if not 0 <= self.loss < 1:
            raise LocalProtocolError("loss must be in [0, 1)")


class MemoryTransport(DataChannel):
    """One end of an in-memory link, shaped like an RTCDataChannel; open from the start.

    Link two with ``a.peer, b.peer = b, a``.  ``ends`` names the sending and receiving
    nodes by index, for the simulator's faults; without it the link never fails.  The
    inbox, the fire-once ``onclose`` and ``onbufferedamountlow`` are
    :class:`~zmesh.link.transport.DataChannel`'s.
    """

    def __init__(
        self,
        sim: "Simulator",
        model: LinkModel,
        binding: bytes,
        name: str,
        *,
        ends: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            lambda callback: sim.schedule(sim.now, callback), max_message_size=MAX_MESSAGE_SIZE
        )
        self._sim = sim
        self.model = model
        self.channel_binding = binding
        self.name = name
        self.ends = ends
        self.peer: MemoryTransport | None = None
        self.tamper: Tamper | None = None
        self._state = "open"
        self._queued = 0
        self._wire_free_at = 0.0
        self._last_arrival = 0.0
        self._generation = 0  # bumped by an abort: what was in flight is lost
        self._held: deque[bytes | None] = deque()  # None: the close, held with the rest
        self._held_bytes = 0
        self._resume_due = False

    def abort(self, reason: str) -> None:
        """Close at once, as a crash would: messages in flight are lost, the peer sees the
        close one latency later, and :attr:`error` is ``reason``."""
        self._shut(reason)

    # -- DataChannel ----------------------------------------------------------------------
    def _transmit(self, data: bytes) -> None:
        if self.peer is None:
            return
        if self.tamper is not None:
            tampered = self.tamper(data)
            if tampered is None:
                return
            data = tampered
        sim, m = self._sim, self.model
        start = max(sim.now, self._wire_free_at)
        self._wire_free_at = start + len(data) / m.bandwidth
        arrival = self._wire_free_at + m.latency
        if m.loss and randbelow(sim.rng, 1 << 30) < m.loss * (1 << 30):
            arrival += m.rto
        arrival = max(arrival, self._last_arrival)  # reliable and ordered
        self._last_arrival = arrival
        self._queued += len(data)
        generation = self._generation
        sim.schedule(self._wire_free_at, lambda: self._drained(data))
        sim.schedule(arrival, lambda: self._arrive(data, generation))

    def _buffered(self) -> int:
        return self._queued

    def _release(self, *, local: bool, graceful: bool) -> None:
        peer = self.peer
        if peer is None:
            return
        if not local:  # the peer is gone: what we held for it will never be read
            self._drop_held()
            return
        peer._drop_held()  # nor will what it held for us
        sim, m = self._sim, self.model
        if graceful:  # the close follows what was sent
            arrival = max(max(sim.now, self._wire_free_at) + m.latency, self._last_arrival)
        else:
            self._generation += 1
            self._drop_held()
            arrival = sim.now + m.latency
        self._last_arrival = arrival
        generation = self._generation
        sim.schedule(arrival, lambda: self._arrive(None, generation))

    # -- the way to the peer --------------------------------------------------------------
    def _drained(self, data: bytes) -> None:
        before = self.bufferedAmount
        self._queued -= len(data)
        self._buffered_changed(before)

    def _arrive(self, item: bytes | None, generation: int) -> None:
        """A message (``None``: the close) is due at the peer."""
        if generation != self._generation:
            return  # lost in an abort
        if self.peer is None or self.peer.readyState != "open":
            return  # nothing will read it
        if self._held:
            self._hold(item)  # behind what a partition holds
            return
        route = self._sim.route(self.ends)
        if route == "hold":
            self._hold(item)
        elif route == "deliver":
            self._hand_over(item)

    def _hand_over(self, item: bytes | None) -> None:
        peer = self.peer
        if peer is None or peer.readyState != "open":
            return
        if item is None:
            self._sim.note(f"{self.name} close")
            peer._remote_closed()
        else:
            self._sim.record(self.name, item)
            peer._received(item)

    def _hold(self, item: bytes | None) -> None:
        size = 0 if item is None else len(item)
        if len(self._held) >= MAX_HELD or self._held_bytes + size > MAX_HELD_BYTES:
            self._drop_held()
            self.abort(
                f"retransmission limit: over {MAX_HELD} messages or {MAX_HELD_BYTES} bytes "
                "held by a partition"
            )
            return
        self._held.append(item)
        self._held_bytes += size
        self._sim.held[self] = None

    def _drop_held(self) -> None:
        self._held.clear()
        self._held_bytes = 0
        self._sim.held.pop(self, None)

    def resume(self) -> None:
        """A partition healed: deliver what is held, in order, one latency from now (the
        retransmission), unless the link is cut again by then."""
        if self._resume_due or not self._held:
            return
        self._resume_due = True
        generation = self._generation
        self._sim.schedule(self._sim.now + self.model.latency, lambda: self._resume(generation))

    def _resume(self, generation: int) -> None:
        self._resume_due = False
        if generation != self._generation:
            return
        while self._held:
            route = self._sim.route(self.ends)
            if route == "hold":
                return  # cut again: wait for the next heal
            item = self._held.popleft()
            self._held_bytes -= 0 if item is None else len(item)
            if route == "deliver":
                self._hand_over(item)
        self._sim.held.pop(self, None)
