"""The simulator's links: :class:`MemoryTransport` pairs with the RTCDataChannel shape.

A message is serialized at the link's bandwidth, arrives after its latency, and, when
lost, after an extra RTO, holding back the ones behind it (a reliable, ordered channel,
as SCTP gives).  Every callback runs from the simulator's event heap, in virtual time.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..link.transport import DataChannel
from ..rng import randbelow
from ..signaling.sdp import MAX_MESSAGE_SIZE

if TYPE_CHECKING:
    from .network import Simulator

__all__ = ["LinkModel", "MemoryTransport"]


@dataclass(frozen=True)
class LinkModel:
    latency: float = 0.010  # one way, seconds
    bandwidth: float = 12.5e6  # bytes per second (100 Mbit/s)
    loss: float = 0.0  # probability that a message needs a retransmission
    rto: float = 0.200  # extra delay for a lost message


class MemoryTransport(DataChannel):
    """One end of an in-memory link, shaped like an RTCDataChannel; open from the start.

    Link two with ``a.peer, b.peer = b, a``.  Closing one end closes both at once:
    messages still in flight are lost.  The inbox, the fire-once ``onclose`` and
    ``onbufferedamountlow`` are :class:`~zmesh.link.transport.DataChannel`'s.
    """

    def __init__(self, sim: "Simulator", model: LinkModel, binding: bytes, name: str) -> None:
        super().__init__(
            lambda callback: sim.schedule(sim.now, callback), max_message_size=MAX_MESSAGE_SIZE
        )
        self._sim = sim
        self._model = model
        self.channel_binding = binding
        self.name = name
        self.peer: MemoryTransport | None = None
        self._state = "open"
        self._queued = 0
        self._wire_free_at = 0.0
        self._last_arrival = 0.0

    def _transmit(self, data: bytes) -> None:
        if self.peer is None:
            return
        sim, m = self._sim, self._model
        start = max(sim.now, self._wire_free_at)
        self._wire_free_at = start + len(data) / m.bandwidth
        arrival = self._wire_free_at + m.latency
        if m.loss and randbelow(sim.rng, 1 << 30) < m.loss * (1 << 30):
            arrival += m.rto
        arrival = max(arrival, self._last_arrival)  # reliable and ordered
        self._last_arrival = arrival
        self._queued += len(data)
        sim.schedule(self._wire_free_at, lambda: self._drained(data))
        sim.schedule(arrival, lambda: self._deliver(data))

    def _buffered(self) -> int:
        return self._queued

    def _release(self, *, local: bool, graceful: bool) -> None:
        if local and self.peer is not None:
            self.peer._remote_closed()

    def _drained(self, data: bytes) -> None:
        before = self.bufferedAmount
        self._queued -= len(data)
        self._buffered_changed(before)

    def _deliver(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.readyState != "open":
            return
        self._sim.record(self.name, data)
        peer._received(data)
