"""A discrete-event simulator: a virtual clock, in-memory links, real nodes.

Every node is a real :class:`~zmesh.node.Node` with real crypto.  Links are
:class:`MemoryTransport` pairs with the RTCDataChannel shape; they model latency,
serialization at a fixed bandwidth, and loss under a reliable channel (a lost message is
retransmitted after an RTO and holds back the ones behind it, as SCTP does).  Each link
has its own :class:`LinkModel` (:meth:`Simulator.connect`, :class:`~zmesh.sim.faults.LinkChange`).

Everything is driven from one seeded :class:`~zmesh.rng.DeterministicRng` and one event
heap, so a seed fixes the run.  :attr:`Simulator.trace` hashes every delivery (time, link,
bytes), every close and every fault: two runs with the same seed and the same faults have
the same digest.  Faults (:mod:`zmesh.sim.faults`) are applied now with
:meth:`Simulator.apply` or later with :meth:`Simulator.at`.

As a runtime driver does, the simulator closes a link's transport once its node reports
:class:`~zmesh.node.LinkClosed`, so each node's transports are exactly its live links, and
carries out :class:`~zmesh.node.DialWanted`: after a signaling round trip
(:data:`SIGNAL_RTTS` one-way latencies) it links the two nodes if the target is up and
reachable, else it reports ``dial_failed`` after :data:`DIAL_FAILS_AFTER` seconds (an
offer nobody answers).
Each node keeps its last ``event_log`` events (:attr:`SimNode.events`).
"""

import hashlib
import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Final, Literal

from ..driver import drain
from ..errors import LocalProtocolError
from ..identity import Descriptor, Identity
from ..node import DialWanted, Event, LinkClosed, Node, NodeConfig
from ..rng import DeterministicRng, sample
from .faults import (
    Blackhole,
    Crash,
    Fault,
    Heal,
    Join,
    Leave,
    LinkChange,
    Partition,
    TamperLink,
)
from .transport import LinkModel, MemoryTransport

__all__ = ["DEFAULT_EVENT_LOG", "LinkModel", "MemoryTransport", "Route", "SimNode", "Simulator"]

#: events each node keeps (the oldest are forgotten first)
DEFAULT_EVENT_LOG: Final = 100_000

#: what the network does with a message that is due: deliver, hold (a partition), drop
Route = Literal["deliver", "hold", "drop"]

SIGNAL_RTTS: Final = 4  # one-way latencies an offer and its answer take through the mesh
DIAL_FAILS_AFTER: Final = 10.0  # seconds until an unanswered dial is reported failed


class SimNode:
    """A node in the simulator: the real node, its transports by link id, and a log of
    its last ``event_log`` events.  ``alive`` is False once it crashed, left or went
    silent: it then takes no input and fires no timer."""

    def __init__(self, index: int, node: Node, *, event_log: int = DEFAULT_EVENT_LOG) -> None:
        """Raises :class:`~zmesh.errors.LocalProtocolError` for an ``event_log`` below 1."""
        if event_log < 1:
            raise LocalProtocolError("event_log must be >= 1")
        self.index = index
        self.node = node
        self.events: deque[Event] = deque(maxlen=event_log)
        self.event_count = 0  # events ever logged, forgotten ones included
        self.transports: dict[int, MemoryTransport] = {}
        self.alive = True
        self.timer_generation = 0
        self.timer_deadline = -1.0

    def log(self, event: Event) -> None:
        self.events.append(event)
        self.event_count += 1

    def events_since(self, mark: int) -> list[Event]:
        """The events logged after :attr:`event_count` was ``mark`` (those still kept)."""
        kept = min(len(self.events), self.event_count - mark)
        if kept <= 0:
            return []
        return list(itertools.islice(self.events, len(self.events) - kept, None))


class Simulator:
    """Real nodes on one virtual clock and one seeded RNG; see the module doc.

    ``model`` is every link's default :class:`LinkModel`; ``event_log`` how many events
    each node keeps."""

    def __init__(
        self, seed: int, model: LinkModel | None = None, *, event_log: int = DEFAULT_EVENT_LOG
    ) -> None:
        self.rng = DeterministicRng(seed, b"simulator")
        self._fault_rng = self.rng.fork(b"faults")
        self.model = model or LinkModel()
        self.event_log = event_log
        self.now = 0.0
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = 0
        self.nodes: list[SimNode] = []
        self._by_id: dict[bytes, SimNode] = {}
        self._next_link = 1
        self._trace = hashlib.sha256()
        self.deliveries = 0
        self.bytes_delivered = 0
        self.on_event: Callable[[SimNode, Event], None] | None = None
        self._partitions: list[Partition] = []
        self._dark: set[int] = set()  # blackholed nodes
        #: transports holding messages across a partition (insertion-ordered)
        self.held: dict[MemoryTransport, None] = {}

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

    def note(self, what: str) -> None:
        """Hash something other than a delivery into the trace (a close, a fault)."""
        self._trace.update(f"{self.now:.9f} {what}\n".encode())

    @property
    def trace_digest(self) -> str:
        return self._trace.hexdigest()

    # -- nodes and links --------------------------------------------------------------
    def add_node(self, config: NodeConfig | None = None) -> SimNode:
        index = len(self.nodes)
        rng = self.rng.fork(b"node-%d" % index)
        node = Node(Identity.generate(rng), rng, self.now, config)
        sim_node = SimNode(index, node, event_log=self.event_log)
        self.nodes.append(sim_node)
        self._by_id[node.node_id] = sim_node
        self._arm_timer(sim_node, node.get_timer())
        return sim_node

    def live_nodes(self) -> list[SimNode]:
        return [sn for sn in self.nodes if sn.alive]

    def descriptor(self, sim_node: SimNode) -> Descriptor:
        return sim_node.node.descriptor(self.now)

    def connect(self, a: SimNode, b: SimNode, model: LinkModel | None = None) -> None:
        """Open a link; ``a`` dials ``b`` knowing ``b``'s descriptor.  Both directions use
        ``model`` (the simulator's default if None).  Raises
        :class:`~zmesh.errors.LocalProtocolError` if either node is down."""
        if not (a.alive and b.alive):
            raise LocalProtocolError(f"cannot link {a.index} and {b.index}: a node is down")
        model = model or self.model
        binding = self.rng.bytes(32)
        ta = MemoryTransport(self, model, binding, f"{a.index}>{b.index}", ends=(a.index, b.index))
        tb = MemoryTransport(self, model, binding, f"{b.index}>{a.index}", ends=(b.index, a.index))
        ta.peer, tb.peer = tb, ta
        link_a, link_b = self._next_link, self._next_link + 1
        self._next_link += 2
        for sn, t, lid in ((a, ta, link_a), (b, tb, link_b)):
            sn.transports[lid] = t
            t.onmessage = lambda data, sn=sn, lid=lid: self._feed(
                sn, lambda: sn.node.receive(lid, data, self.now)
            )
            t.onclose = lambda sn=sn, lid=lid: self._feed(
                sn, lambda: sn.node.link_closed(lid, self.now)
            )
        self._input(b, lambda: b.node.open_link(link_b, self.now, binding=binding))
        peer = self.descriptor(b)
        self._input(a, lambda: a.node.open_link(link_a, self.now, binding=binding, peer=peer))

    def disconnect(self, a: SimNode, b: SimNode) -> None:
        """Close ``a``'s link to ``b`` in order, as ``a``'s driver would."""
        link = a.node.link_to(b.node.node_id)
        if link is not None:
            a.transports[link].close()

    def call[T](self, sim_node: SimNode, action: Callable[[], T]) -> T:
        """Run an application call on a node, flush its output, return the call's result.

        Raises :class:`~zmesh.errors.LocalProtocolError` if the node is down."""
        if not sim_node.alive:
            raise LocalProtocolError(f"node {sim_node.index} is down")
        return self._input(sim_node, action)

    # -- faults -----------------------------------------------------------------------
    def at(self, when: float, fault: Fault) -> None:
        """Apply ``fault`` at virtual time ``when`` (an event on the heap)."""
        self.schedule(when, lambda: self.apply(fault))

    def apply(self, fault: Fault) -> None:
        """Apply ``fault`` now and hash it into the trace.  Raises
        :class:`~zmesh.errors.LocalProtocolError` for a fault naming a node that does not
        exist or is down, a link that does not exist, or a partition that is not active."""
        self.note(f"fault {fault.describe()}")
        _FAULT_HANDLERS[type(fault)](self, fault)

    def route(self, ends: tuple[int, int] | None) -> Route:
        """What the network does now with a message from ``ends[0]`` to ``ends[1]``."""
        if ends is None or not (self._partitions or self._dark):
            return "deliver"
        src, dst = ends
        if src in self._dark or dst in self._dark:
            return "drop"
        if any(p.separates(src, dst) for p in self._partitions):
            return "hold"
        return "deliver"

    def _live(self, index: int) -> SimNode:
        if not 0 <= index < len(self.nodes) or not self.nodes[index].alive:
            raise LocalProtocolError(f"node {index} does not exist or is down")
        return self.nodes[index]

    def _stop(self, sn: SimNode) -> dict[int, MemoryTransport]:
        """Take ``sn`` down: no more input or timers.  Returns the transports it had."""
        sn.alive = False
        sn.timer_generation += 1
        sn.timer_deadline = -1.0
        transports, sn.transports = sn.transports, {}
        return transports

    def _crash(self, fault: Crash) -> None:
        for transport in self._stop(self._live(fault.node)).values():
            transport.abort("crashed")

    def _blackhole(self, fault: Blackhole) -> None:
        self._stop(self._live(fault.node))
        self._dark.add(fault.node)

    def _leave(self, fault: Leave) -> None:
        if fault.node is None:
            candidates = {sn.node.node_id: sn for sn in self.live_nodes()}
            for index in fault.spare:
                if 0 <= index < len(self.nodes):
                    candidates.pop(self.nodes[index].node.node_id, None)
            if not candidates:
                return
            [chosen] = sample(self._fault_rng, list(candidates), 1)
            sn = candidates[chosen]
            self.note(f"leaver {sn.index}")
        else:
            sn = self._live(fault.node)
        for transport in self._stop(sn).values():
            transport.close()

    def _join(self, fault: Join) -> None:
        live = {sn.node.node_id: sn for sn in self.live_nodes()}
        sn = self.add_node(fault.config)
        peers = sample(self._fault_rng, list(live), min(fault.links, len(live)))
        self.note(f"joined {sn.index} to {sorted(live[p].index for p in peers)}")
        for peer in peers:
            self.connect(sn, live[peer])

    def _partition(self, fault: Partition) -> None:
        for index in sorted(fault.a | fault.b):
            if not 0 <= index < len(self.nodes):
                raise LocalProtocolError(f"node {index} does not exist")
        self._partitions.append(fault)

    def _heal(self, fault: Heal) -> None:
        if fault.partition not in self._partitions:
            raise LocalProtocolError(f"no active {fault.partition.describe()}")
        self._partitions.remove(fault.partition)
        for transport in list(self.held):
            transport.resume()

    def _links_between(self, src: int, dst: int) -> list[MemoryTransport]:
        """The open transports on ``src``'s side of its links to ``dst``; raises
        :class:`~zmesh.errors.LocalProtocolError` if there is none."""
        found = [t for t in self._live(src).transports.values() if t.ends == (src, dst)]
        if not found:
            raise LocalProtocolError(f"no link from node {src} to node {dst}")
        return found

    def _link_change(self, fault: LinkChange) -> None:
        for transport in self._links_between(fault.a, fault.b):
            transport.model = fault.model
        for transport in self._links_between(fault.b, fault.a):
            transport.model = fault.model

    def _tamper(self, fault: TamperLink) -> None:
        for transport in self._links_between(fault.src, fault.dst):
            transport.tamper = fault.hook

    # -- the driver loop --------------------------------------------------------------
    def _feed(self, sn: SimNode, action: Callable[[], None]) -> None:
        """An input from the network or a timer: dropped if the node is down."""
        if sn.alive:
            self._input(sn, action)

    def _input[T](self, sn: SimNode, action: Callable[[], T]) -> T:
        result = action()
        self._flush(sn)
        return result

    def _flush(self, sn: SimNode) -> None:
        def send(link_id: int, data: bytes) -> None:
            transport = sn.transports.get(link_id)
            if transport is not None:
                transport.send(data)

        def on_event(event: Event) -> None:
            sn.log(event)
            if isinstance(event, LinkClosed):  # the CLOSE frame went out above
                transport = sn.transports.pop(event.link_id, None)
                if transport is not None:
                    transport.close()
            elif isinstance(event, DialWanted):
                self._dial(sn, event.descriptor.node_id)
            if self.on_event:
                self.on_event(sn, event)

        self._arm_timer(sn, drain(sn.node, self.now, send, on_event))

    def _dial(self, sn: SimNode, node_id: bytes) -> None:
        """Carry out a DialWanted (see the module doc)."""
        target = self._by_id.get(node_id)

        def reachable() -> bool:
            return (
                target is not None
                and target.alive
                and self.route((sn.index, target.index)) == "deliver"
            )

        def connect() -> None:
            if not sn.alive:
                return
            if target is not None and reachable():
                self.note(f"dialled {sn.index}>{target.index}")
                self.connect(sn, target)
            else:
                self.schedule(self.now + DIAL_FAILS_AFTER, fail)

        def fail() -> None:
            self.note(f"dial failed {sn.index}>{node_id.hex()[:8]}")
            self._feed(sn, lambda: sn.node.dial_failed(node_id, self.now))

        self.schedule(self.now + SIGNAL_RTTS * self.model.latency, connect)

    def _arm_timer(self, sn: SimNode, deadline: float) -> None:
        if deadline == sn.timer_deadline:
            return  # one live timer per node (aioquic's pattern)
        sn.timer_deadline = deadline
        sn.timer_generation += 1
        generation = sn.timer_generation

        def fire() -> None:
            if sn.timer_generation == generation:
                sn.timer_deadline = -1.0
                self._feed(sn, lambda: sn.node.handle_timer(self.now))

        self.schedule(max(deadline, self.now), fire)


_FAULT_HANDLERS: dict[type, Callable[[Simulator, Any], None]] = {
    Crash: Simulator._crash,
    Blackhole: Simulator._blackhole,
    Leave: Simulator._leave,
    Join: Simulator._join,
    Partition: Simulator._partition,
    Heal: Simulator._heal,
    LinkChange: Simulator._link_change,
    TamperLink: Simulator._tamper,
}
