"""A discrete-event simulator: a virtual clock, in-memory links, real nodes.

Every node is a real :class:`~zmesh.node.Node` with real crypto.  Links are
:class:`MemoryTransport` pairs with the RTCDataChannel shape; they model latency,
serialization at a fixed bandwidth, and loss under a reliable channel (a lost message is
retransmitted after an RTO and holds back the ones behind it, as SCTP does).

Everything is driven from one seeded :class:`~zmesh.rng.DeterministicRng` and one event
heap, so a seed fixes the run.  :attr:`Simulator.trace` hashes every delivery (time, link,
bytes): two runs with the same seed have the same digest.
"""

import hashlib
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from ..identity import Descriptor, Identity
from ..link.transport import ReadyState
from ..node import Event, Node, NodeConfig
from ..rng import DeterministicRng, randbelow


@dataclass(frozen=True)
class LinkModel:
    latency: float = 0.010  # one way, seconds
    bandwidth: float = 12.5e6  # bytes per second (100 Mbit/s)
    loss: float = 0.0  # probability that a message needs a retransmission
    rto: float = 0.200  # extra delay for a lost message


class MemoryTransport:
    """One end of an in-memory link, shaped like an RTCDataChannel."""

    def __init__(self, sim: "Simulator", model: LinkModel, binding: bytes, name: str) -> None:
        self._sim = sim
        self._model = model
        self.channel_binding = binding
        self.name = name
        self.peer: MemoryTransport | None = None
        self._state: ReadyState = "open"
        self._queued = 0
        self._wire_free_at = 0.0
        self._last_arrival = 0.0
        self.bufferedAmountLowThreshold = 0
        self.onopen: Callable[[], None] | None = None
        self.onmessage: Callable[[bytes], None] | None = None
        self.onclose: Callable[[], None] | None = None
        self.onbufferedamountlow: Callable[[], None] | None = None

    @property
    def readyState(self) -> ReadyState:  # noqa: N802
        return self._state

    @property
    def bufferedAmount(self) -> int:  # noqa: N802
        return self._queued

    def send(self, data: bytes) -> None:
        if self._state != "open" or self.peer is None:
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

    def _drained(self, data: bytes) -> None:
        before = self._queued
        self._queued -= len(data)
        low = self.bufferedAmountLowThreshold
        if before > low >= self._queued and self.onbufferedamountlow:
            self.onbufferedamountlow()

    def _deliver(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer._state != "open":
            return
        self._sim.record(self.name, data)
        if peer.onmessage:
            peer.onmessage(data)

    def close(self) -> None:
        for end in (self, self.peer):
            if end is not None and end._state == "open":
                end._state = "closed"
                if end.onclose:
                    self._sim.schedule(self._sim.now, end.onclose)


@dataclass
class SimNode:
    index: int
    node: Node
    events: list[Event] = field(default_factory=list)
    transports: dict[int, MemoryTransport] = field(default_factory=dict)
    timer_generation: int = 0
    timer_deadline: float = -1.0


class Simulator:
    def __init__(self, seed: int, model: LinkModel | None = None) -> None:
        self.rng = DeterministicRng(seed, b"simulator")
        self.model = model or LinkModel()
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.nodes: list[SimNode] = []
        self._next_link = 1
        self._trace = hashlib.sha256()
        self.deliveries = 0
        self.bytes_delivered = 0
        self.on_event: Callable[[SimNode, Event], None] | None = None

    # -- the clock --------------------------------------------------------------------
    def schedule(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, self._seq, callback))
        self._seq += 1

    def step(self) -> bool:
        if not self._heap:
            return False
        when, _, callback = heapq.heappop(self._heap)
        self.now = max(self.now, when)
        callback()
        return True

    def run(self, until: Callable[[], bool] | None = None, *, max_time: float = 3600.0) -> bool:
        """Process events until ``until()`` holds (True) or time/events run out (False)."""
        while until is None or not until():
            if not self._heap or self._heap[0][0] > max_time:
                return until is None
            self.step()
        return True

    # -- the trace --------------------------------------------------------------------
    def record(self, name: str, data: bytes) -> None:
        """Hash one delivery, every byte of it, into the trace.  Simulated identities sign
        deterministically, so descriptors are reproducible too (docs/decisions.md, D3)."""
        self.deliveries += 1
        self.bytes_delivered += len(data)
        self._trace.update(f"{self.now:.9f} {name} {len(data)} ".encode())
        self._trace.update(hashlib.sha256(data).digest())

    @property
    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # -- nodes and links --------------------------------------------------------------
    def add_node(self, config: NodeConfig | None = None) -> SimNode:
        index = len(self.nodes)
        rng = self.rng.fork(b"node-%d" % index)
        node = Node(Identity.generate(rng), rng, self.now, config)
        sim_node = SimNode(index, node)
        self.nodes.append(sim_node)
        self._arm_timer(sim_node)
        return sim_node

    def descriptor(self, sim_node: SimNode) -> Descriptor:
        return sim_node.node.descriptor(self.now)

    def connect(self, a: SimNode, b: SimNode) -> None:
        """Open a link; ``a`` dials ``b`` knowing ``b``'s descriptor."""
        binding = self.rng.bytes(32)
        ta = MemoryTransport(self, self.model, binding, f"{a.index}>{b.index}")
        tb = MemoryTransport(self, self.model, binding, f"{b.index}>{a.index}")
        ta.peer, tb.peer = tb, ta
        link_a, link_b = self._next_link, self._next_link + 1
        self._next_link += 2
        for sn, t, lid in ((a, ta, link_a), (b, tb, link_b)):
            sn.transports[lid] = t
            t.onmessage = lambda data, sn=sn, lid=lid: self._input(
                sn, lambda: sn.node.receive(lid, data, self.now)
            )
            t.onclose = lambda sn=sn, lid=lid: self._input(
                sn, lambda: sn.node.link_closed(lid, self.now)
            )
        self._input(b, lambda: b.node.open_link(link_b, self.now, binding=binding))
        peer = self.descriptor(b)
        self._input(a, lambda: a.node.open_link(link_a, self.now, binding=binding, peer=peer))

    def disconnect(self, a: SimNode, b: SimNode) -> None:
        link = a.node.link_to(b.node.node_id)
        if link is not None:
            a.transports[link].close()

    def call[T](self, sim_node: SimNode, action: Callable[[], T]) -> T:
        """Run an application call on a node, flush its output, return the call's result."""
        return self._input(sim_node, action)

    # -- the driver loop --------------------------------------------------------------
    def _input[T](self, sn: SimNode, action: Callable[[], T]) -> T:
        result = action()
        self._flush(sn)
        return result

    def _flush(self, sn: SimNode) -> None:
        node = sn.node
        for link_id, data in node.messages_to_send():
            transport = sn.transports.get(link_id)
            if transport is not None:
                transport.send(data)
        while (event := node.next_event()) is not None:
            sn.events.append(event)
            if self.on_event:
                self.on_event(sn, event)
        self._arm_timer(sn)

    def _arm_timer(self, sn: SimNode) -> None:
        deadline = sn.node.get_timer()
        if deadline == sn.timer_deadline:
            return  # one live timer per node (aioquic's pattern)
        sn.timer_deadline = deadline
        sn.timer_generation += 1
        generation = sn.timer_generation

        def fire() -> None:
            if sn.timer_generation == generation:
                sn.timer_deadline = -1.0
                self._input(sn, lambda: sn.node.handle_timer(self.now))

        self.schedule(max(deadline, self.now), fire)
