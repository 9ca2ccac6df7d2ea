"""The node: composes links, the onion relay, circuit ends and streams.

Theory of operation (aioquic's pattern).  A driver owns the transports and the clock and
talks to one :class:`Node`:

* inputs: :meth:`Node.open_link`, :meth:`Node.receive`, :meth:`Node.link_closed`,
  :meth:`Node.handle_timer`, and the client API (:meth:`Node.build_circuit`,
  :meth:`Node.open_stream`, :meth:`Node.send`, :meth:`Node.finish`);
* outputs, pulled after every input: :meth:`Node.messages_to_send` (bytes per link),
  :meth:`Node.get_timer` (one deadline) and :meth:`Node.next_event`.

Every relay runs the same code for a circuit whatever its position: it sees a CREATE of
constant size, a CREATED of constant size and cells of constant size, and removes (forward)
or adds (backward) one LIONESS layer.  Only the circuit's final hop opens cells.

Links carry their own flow control: a peer may have at most :data:`LINK_WINDOW` counted
frames in flight, and the receiver returns CREDIT as it processes them, so a driver's
bounded receive queue can never overflow.  Frames beyond the credit wait in a per-link
backlog; a circuit whose queued cells exceed :data:`MAX_QUEUED_CELLS` is destroyed.

Descriptors spread by gossip: on link-up each side sends what it knows, and a newly learned
descriptor is verified and flooded on.  SIGNAL frames carry signaling (WebRTC offers and
answers) to nodes we have no link to, along the path their descriptor came from.

Error boundary: a :class:`RemoteProtocolError` from a link frame closes that link; one from
a circuit's setup or cells destroys that circuit.  Nothing else escapes :meth:`receive`.
"""

import logging
from collections import deque
from dataclasses import dataclass, field

from .errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .identity import Descriptor, Flags, Identity, decode_descriptor, short_id
from .link import frames as lf
from .link.handshake import LinkHandshake
from .onion import sphinx
from .onion.cell import relay_backward, relay_forward
from .onion.geometry import DEFAULT_GEOMETRY, Geometry
from .onion.keyring import DEFAULT_EPOCH_LENGTH, OnionKeyRing
from .rng import Rng, randbelow
from .session.endpoint import (
    CircuitEnd,
    ClientEnd,
    ServerEnd,
    StreamConnected,
    StreamData,
    StreamEvent,
    StreamFinished,
    StreamOpened,
    StreamReset,
)

log = logging.getLogger("zmesh.node")

HANDSHAKE_TIMEOUT = 15.0
MAX_CIRCUITS_PER_LINK = 4096
LINK_WINDOW = 512  # counted frames in flight per link direction
MAX_QUEUED_CELLS = 2048  # per circuit, waiting for link credit
MAX_DIRECTORY = 10_000
SIGNAL_TTL = 3
_UNCOUNTED = (lf.Hello1, lf.Hello2, lf.Hello3, lf.Credit, lf.Close)
BUILD_TIMEOUT = 30.0
DESCRIPTOR_LIFETIME = 3 * 3600


# -- events -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkUp:
    link_id: int
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class LinkClosed:
    link_id: int
    peer_id: bytes | None
    code: CloseCode


@dataclass(frozen=True, slots=True)
class CircuitBuilt:
    circuit_id: int


@dataclass(frozen=True, slots=True)
class CircuitClosed:
    circuit_id: int
    code: CloseCode


@dataclass(frozen=True, slots=True)
class CircuitStreamEvent:
    """A stream event on one of this node's circuit ends (client or final hop)."""

    circuit_id: int
    event: StreamEvent


@dataclass(frozen=True, slots=True)
class DescriptorLearned:
    """A verified descriptor of a node we did not know (or a newer one)."""

    descriptor: Descriptor


@dataclass(frozen=True, slots=True)
class SignalReceived:
    """A signaling payload addressed to us, from ``origin``."""

    origin: bytes
    payload: bytes


Event = (
    LinkUp
    | LinkClosed
    | CircuitBuilt
    | CircuitClosed
    | CircuitStreamEvent
    | DescriptorLearned
    | SignalReceived
)


@dataclass(frozen=True, slots=True)
class RelayView:
    """Everything a hop learns about a circuit's neighbours: its predecessor and successor.

    ``successor`` is None when this node is the circuit's final hop.
    """

    predecessor: bytes
    successor: bytes | None


@dataclass(frozen=True)
class NodeConfig:
    geometry: Geometry = DEFAULT_GEOMETRY
    flags: Flags = Flags.RELAY
    epoch_length: float = DEFAULT_EPOCH_LENGTH
    addresses: tuple[str, ...] = ()
    stream_window: int = 1 << 20
    gossip: bool = True
    keepalive: float = 1.0  # send PADDING on a link idle this long
    link_timeout: float = 3.0  # close a link silent this long (a peer died)
    build_timeout: float = BUILD_TIMEOUT
    #: False when the application reports what it consumed (Node.consume): receive windows
    #: then slide only as fast as it reads, e.g. as fast as a TCP socket drains
    auto_consume: bool = True


# -- internal state ---------------------------------------------------------------
Side = tuple[int, int]  # (link_id, circ_id)


@dataclass
class _Link:
    link_id: int
    handshake: LinkHandshake
    decoder: lf.FrameDecoder
    deadline: float
    peer_id: bytes | None = None
    up: bool = False
    circ_ids: set[int] = field(default_factory=set)
    last_rx: float = 0.0
    last_tx: float = 0.0
    credit: int = LINK_WINDOW  # counted frames we may still send
    allowance: int = LINK_WINDOW  # counted frames the peer may still send
    processed: int = 0  # counted frames processed since we last returned credit
    backlog: deque[tuple[bytes, "Side | None"]] = field(default_factory=deque)


@dataclass
class _Hop:
    """A circuit as seen by a relay (``next`` set) or by its final hop (``end`` set)."""

    prev: Side
    keys: sphinx.HopKeys
    confirm_tag: bytes
    view: RelayView
    next: Side | None = None
    end: ServerEnd | None = None
    circuit_id: int = 0
    open: bool = False
    fwd: int = 0  # cell counters; the final hop's live in its ServerEnd
    bwd: int = 0


@dataclass
class _ClientCircuit:
    circuit_id: int
    out: Side
    setup: sphinx.SetupState
    deadline: float
    end: ClientEnd | None = None


class Node:
    def __init__(
        self, identity: Identity, rng: Rng, now: float, config: NodeConfig | None = None
    ) -> None:
        self.identity = identity
        self.node_id = identity.node_id
        self.config = config or NodeConfig()
        self.geometry = self.config.geometry
        self._rng = rng
        self.keyring = OnionKeyRing(rng, now, epoch_length=self.config.epoch_length)
        self._next_rotation = self.keyring.next_rotation(now)
        self._now = now  # the latest time any entry point was given
        self._links: dict[int, _Link] = {}
        self._link_by_peer: dict[bytes, int] = {}
        self._circuits: dict[Side, _Hop | _ClientCircuit] = {}
        self._clients: dict[int, _ClientCircuit] = {}
        self._endpoints: dict[int, _Hop] = {}
        self._next_circuit = 1
        self._out: list[tuple[int, bytes]] = []
        self._events: deque[Event] = deque()
        self._descriptor: Descriptor | None = None
        self.relay_views: list[RelayView] = []
        self.cells_relayed = 0
        self.directory: dict[bytes, Descriptor] = {}
        self._learned_from: dict[bytes, int] = {}  # node id -> link its descriptor came on
        self._queued: dict[Side, int] = {}  # cells per outgoing circuit side in backlogs

    # -- identity -------------------------------------------------------------------
    def descriptor(self, now: float) -> Descriptor:
        """This node's signed descriptor for the current onion key epoch."""
        epoch, onion_pk = self.keyring.current(now)
        if self._descriptor is None or self._descriptor.onion_epoch != epoch:
            self._descriptor = self.identity.make_descriptor(
                flags=self.config.flags,
                onion_epoch=epoch,
                onion_pk=onion_pk,
                published=int(now),
                lifetime=DESCRIPTOR_LIFETIME,
                addresses=self.config.addresses,
            )
        return self._descriptor

    # -- driver outputs -------------------------------------------------------------
    def messages_to_send(self) -> list[tuple[int, bytes]]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        cfg = self.config
        deadlines = [
            min(link.last_tx + cfg.keepalive, link.last_rx + cfg.link_timeout)
            if link.up
            else link.deadline
            for link in self._links.values()
        ]
        deadlines += [c.deadline for c in self._clients.values() if c.end is None]
        deadlines.append(self._next_rotation)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        self._now = now
        for link in list(self._links.values()):
            if not link.up:
                if now >= link.deadline:
                    self._close_link(link, CloseCode.TIMEOUT)
            elif now >= link.last_rx + self.config.link_timeout:
                log.info("link=%d event=close reason='peer silent'", link.link_id)
                self._close_link(link, CloseCode.TIMEOUT)
            elif now >= link.last_tx + self.config.keepalive:
                self._send(link.link_id, lf.Padding(0))
        for circ in list(self._clients.values()):
            if circ.end is None and now >= circ.deadline:
                self._send(circ.out[0], lf.Destroy(circ.out[1], CloseCode.TIMEOUT))
                self._drop_client(circ, CloseCode.TIMEOUT)
        if now >= self._next_rotation:
            self.keyring.rotate(now)
            self._next_rotation = self.keyring.next_rotation(now)
            if self.config.gossip:
                announcement = lf.DescriptorFrame(self.descriptor(now).encode())
                for link in list(self._links.values()):
                    if link.up:
                        self._send(link.link_id, announcement)

    # -- links ----------------------------------------------------------------------
    def open_link(
        self, link_id: int, now: float, *, binding: bytes, peer: Descriptor | None = None
    ) -> None:
        """A transport opened.  ``peer`` is given when we initiated it (we know whom we
        dialled); otherwise we wait for the peer's HELLO1."""
        if link_id in self._links:
            raise LocalProtocolError(f"link {link_id} already open")
        self._now = now
        hs = LinkHandshake(
            self.identity,
            initiator=peer is not None,
            binding=binding,
            rng=self._rng,
            expected_peer_kem_pk=peer.identity_kem_pk if peer else None,
            expected_peer_id=peer.node_id if peer else None,
        )
        link = _Link(link_id, hs, lf.FrameDecoder(self.geometry), now + HANDSHAKE_TIMEOUT)
        self._links[link_id] = link
        if peer is not None:
            self._send(link_id, hs.start())

    def link_closed(self, link_id: int, now: float) -> None:
        """The transport closed under us."""
        link = self._links.get(link_id)
        if link is not None:
            self._close_link(link, CloseCode.CONNECTION_FAILED, notify=False)

    def link_to(self, node_id: bytes) -> int | None:
        """An open link to ``node_id`` (the first one, if both sides dialled)."""
        return self._link_by_peer.get(node_id)

    def peers(self) -> list[bytes]:
        return [link.peer_id for link in self._links.values() if link.up and link.peer_id]

    def receive(self, link_id: int, data: bytes, now: float) -> None:
        """Bytes arrived on a link."""
        self._now = now
        link = self._links.get(link_id)
        if link is None:
            return
        link.last_rx = now
        try:
            frames = link.decoder.feed(data)
            for frame in frames:
                if link_id not in self._links:
                    break
                counted = link.up and not isinstance(frame, _UNCOUNTED)
                if counted:
                    if link.allowance <= 0:
                        raise RemoteProtocolError(
                            "peer overran the link window", CloseCode.RESOURCE
                        )
                    link.allowance -= 1
                self._handle_frame(link, frame, now)
                if counted and link.link_id in self._links:
                    link.processed += 1
            if link_id in self._links and link.processed >= LINK_WINDOW // 2:
                link.allowance += link.processed
                self._send(link_id, lf.Credit(link.processed))
                link.processed = 0
        except RemoteProtocolError as exc:
            log.info("link=%d event=close reason=%r", link_id, str(exc))
            self._close_link(link, exc.code)

    def _handle_frame(self, link: _Link, frame: lf.Frame, now: float) -> None:
        if not link.up:
            reply = link.handshake.receive(frame)
            if reply is not None:
                self._send(link.link_id, reply)
            if link.handshake.done:
                link.up = True
                link.last_tx = link.last_rx = now
                link.peer_id = link.handshake.peer_id
                assert link.peer_id is not None
                self._link_by_peer.setdefault(link.peer_id, link.link_id)
                log.debug("link=%d event=up peer=%s", link.link_id, short_id(link.peer_id))
                self._events.append(LinkUp(link.link_id, link.peer_id))
                if self.config.gossip:
                    self._announce(link, now)
            return
        match frame:
            case lf.Create():
                self._on_create(link, frame, now)
            case lf.Created():
                self._on_created(link, frame)
            case lf.Cell():
                self._on_cell(link, frame)
            case lf.Destroy():
                self._on_destroy(link, frame)
            case lf.Close():
                self._close_link(link, frame.code, notify=False)
            case lf.Credit():
                self._on_credit(link, frame)
            case lf.DescriptorFrame():
                self._on_descriptor(link, frame, now)
            case lf.Signal():
                self._on_signal(link, frame)
            case lf.Padding():
                pass
            case _:
                raise RemoteProtocolError("handshake frame on an open link", CloseCode.HANDSHAKE)

    def _close_link(self, link: _Link, code: CloseCode, *, notify: bool = True) -> None:
        if notify:
            self._send(link.link_id, lf.Close(code))
        del self._links[link.link_id]
        if link.peer_id is not None and self._link_by_peer.get(link.peer_id) == link.link_id:
            del self._link_by_peer[link.peer_id]
            for other in self._links.values():  # fall back to another link to that peer
                if other.up and other.peer_id == link.peer_id:
                    self._link_by_peer[link.peer_id] = other.link_id
                    break
        for side in [s for s in self._circuits if s[0] == link.link_id]:
            if side in self._circuits:
                self._teardown(side, CloseCode.CONNECTION_FAILED)
        self._events.append(LinkClosed(link.link_id, link.peer_id, code))

    def _send(self, link_id: int, frame: lf.Frame) -> None:
        data = lf.encode_frame(frame)
        if isinstance(frame, _UNCOUNTED):
            self._out.append((link_id, data))
        else:
            self._emit(link_id, data, None)

    def _emit(self, link_id: int, data: bytes, side: Side | None) -> None:
        """Send a counted frame within the link's credit, or queue it."""
        link = self._links.get(link_id)
        if link is None:
            return
        link.last_tx = self._now
        if link.credit > 0 and not link.backlog:
            link.credit -= 1
            self._out.append((link_id, data))
            return
        link.backlog.append((data, side))
        if side is not None:
            queued = self._queued.get(side, 0) + 1
            self._queued[side] = queued
            if queued > MAX_QUEUED_CELLS and side in self._circuits:
                log.info("circuit event=destroy reason='queue limit'")
                self._teardown(side, CloseCode.RESOURCE)

    def _on_credit(self, link: _Link, frame: lf.Credit) -> None:
        if frame.frames > LINK_WINDOW or link.credit + frame.frames > LINK_WINDOW:
            raise RemoteProtocolError("credit beyond the link window", CloseCode.RESOURCE)
        link.credit += frame.frames
        while link.credit > 0 and link.backlog:
            data, side = link.backlog.popleft()
            link.credit -= 1
            self._out.append((link.link_id, data))
            if side is not None:
                left = self._queued[side] - 1
                if left:
                    self._queued[side] = left
                else:
                    del self._queued[side]

    # -- gossip and signaling ---------------------------------------------------------
    def _announce(self, link: _Link, now: float) -> None:
        self._send(link.link_id, lf.DescriptorFrame(self.descriptor(now).encode()))
        for node_id, desc in self.directory.items():
            if node_id != link.peer_id:
                self._send(link.link_id, lf.DescriptorFrame(desc.encode()))

    def _on_descriptor(self, link: _Link, frame: lf.DescriptorFrame, now: float) -> None:
        try:
            desc = decode_descriptor(frame.data)
            desc.verify(now)
        except RemoteProtocolError as exc:
            # an honest peer may forward one that expired on the way: drop, keep the link
            log.info("link=%d event=drop_descriptor reason=%r", link.link_id, str(exc))
            return
        node_id = desc.node_id
        known = self.directory.get(node_id)
        if node_id == self.node_id or (known is not None and known.published >= desc.published):
            return
        if known is None and len(self.directory) >= MAX_DIRECTORY:
            return
        self.directory[node_id] = desc
        self._learned_from[node_id] = link.link_id
        self._events.append(DescriptorLearned(desc))
        for other in list(self._links.values()):
            if other.up and other is not link and other.peer_id != node_id:
                self._send(other.link_id, frame)

    def _route(self, target: bytes) -> int | None:
        direct = self.link_to(target)
        if direct is not None:
            return direct
        via = self._learned_from.get(target)
        return via if via in self._links else None

    def send_signal(self, target: bytes, payload: bytes) -> bool:
        """Send a signaling payload to ``target`` through the mesh; False if no route."""
        if len(payload) > lf.MAX_SIGNAL_PAYLOAD:
            raise LocalProtocolError("signal payload too large")
        link_id = self._route(target)
        if link_id is None:
            return False
        self._send(link_id, lf.Signal(self.node_id, target, SIGNAL_TTL, payload))
        return True

    def _on_signal(self, link: _Link, frame: lf.Signal) -> None:
        if frame.target == self.node_id:
            if frame.origin not in self._learned_from and frame.origin != link.peer_id:
                self._learned_from[frame.origin] = link.link_id  # the way back
            self._events.append(SignalReceived(frame.origin, frame.payload))
            return
        link_id = self._route(frame.target)
        if frame.ttl == 0 or link_id is None or link_id == link.link_id:
            return  # undeliverable: drop, as an IP router would
        if frame.origin not in self._learned_from:
            self._learned_from[frame.origin] = link.link_id
        self._send(link_id, lf.Signal(frame.origin, frame.target, frame.ttl - 1, frame.payload))

    def _alloc_circ_id(self, link: _Link) -> int:
        # the top bit says who allocated the id, so both ends never pick the same one
        top = 0x80000000 if link.handshake.initiator else 0
        while True:
            circ_id = top | randbelow(self._rng, 0x80000000)
            if circ_id not in link.circ_ids:
                link.circ_ids.add(circ_id)
                return circ_id

    # -- relay ----------------------------------------------------------------------
    def _on_create(self, link: _Link, frame: lf.Create, now: float) -> None:
        side = (link.link_id, frame.circ_id)
        if side in self._circuits:
            raise RemoteProtocolError("CREATE for a circuit id in use")
        if len(link.circ_ids) >= MAX_CIRCUITS_PER_LINK:
            self._send(link.link_id, lf.Destroy(frame.circ_id, CloseCode.RESOURCE))
            return
        link.circ_ids.add(frame.circ_id)
        try:
            key = self.keyring.key_for(frame.epoch)
            result = sphinx.unwrap_setup_header(self.geometry, key, frame.header)
            self.keyring.check_replay(frame.epoch, result.keys.replay_tag)
        except RemoteProtocolError as exc:
            log.info("circ event=reject reason=%r", str(exc))
            self._send(link.link_id, lf.Destroy(frame.circ_id, exc.code))
            link.circ_ids.discard(frame.circ_id)
            return
        assert link.peer_id is not None
        if isinstance(result, sphinx.Final):
            view = RelayView(link.peer_id, None)
            hop = _Hop(side, result.keys, result.confirm_tag, view, open=True)
            hop.end = ServerEnd(
                self.geometry,
                result.keys,
                window=self.config.stream_window,
                auto_consume=self.config.auto_consume,
            )
            hop.circuit_id = self._new_circuit_id()
            self._endpoints[hop.circuit_id] = hop
            self._circuits[side] = hop
            self._record_view(view)
            inner = self._rng.bytes(self.geometry.created_size)
            reply = sphinx.wrap_created(self.geometry, result.keys, result.confirm_tag, inner)
            self._send(link.link_id, lf.Created(frame.circ_id, reply))
            return
        next_link_id = self.link_to(result.next_node_id)
        if next_link_id is None:
            self._send(link.link_id, lf.Destroy(frame.circ_id, CloseCode.CONNECTION_FAILED))
            link.circ_ids.discard(frame.circ_id)
            return
        next_link = self._links[next_link_id]
        out = (next_link_id, self._alloc_circ_id(next_link))
        view = RelayView(link.peer_id, result.next_node_id)
        hop = _Hop(side, result.keys, result.confirm_tag, view, next=out)
        self._circuits[side] = hop
        self._circuits[out] = hop
        self._record_view(view)
        self._send(next_link_id, lf.Create(out[1], result.next_epoch, result.header))

    def _record_view(self, view: RelayView) -> None:
        self.relay_views.append(view)
        log.debug(
            "circuit event=hop predecessor=%s successor=%s",
            short_id(view.predecessor),
            short_id(view.successor) if view.successor else "none",
        )

    def _on_created(self, link: _Link, frame: lf.Created) -> None:
        side = (link.link_id, frame.circ_id)
        circ = self._circuits.get(side)
        if isinstance(circ, _ClientCircuit) and circ.end is None:
            try:
                sphinx.verify_created(self.geometry, circ.setup, frame.reply)
            except RemoteProtocolError as exc:
                self._send(link.link_id, lf.Destroy(frame.circ_id, exc.code))
                self._drop_client(circ, exc.code)
                return
            circ.end = ClientEnd(
                self.geometry,
                circ.setup.hop_keys,
                window=self.config.stream_window,
                auto_consume=self.config.auto_consume,
            )
            self._events.append(CircuitBuilt(circ.circuit_id))
            self._pump(circ.circuit_id)
        elif isinstance(circ, _Hop) and circ.next == side and not circ.open:
            circ.open = True
            reply = sphinx.wrap_created(self.geometry, circ.keys, circ.confirm_tag, frame.reply)
            self._send(circ.prev[0], lf.Created(circ.prev[1], reply))
        else:
            raise RemoteProtocolError("unexpected CREATED")

    def _on_cell(self, link: _Link, frame: lf.Cell) -> None:
        side = (link.link_id, frame.circ_id)
        circ = self._circuits.get(side)
        if circ is None:
            return  # a cell racing a DESTROY
        if isinstance(circ, _ClientCircuit):
            if circ.end is None:
                raise RemoteProtocolError("cell before CREATED")
            self._open_cell(circ.circuit_id, circ.end, frame.cell, side)
            return
        if not circ.open:
            raise RemoteProtocolError("cell on a circuit still being built")
        if circ.end is not None:
            # the final hop: remove its layer (the same LIONESS pass) and authenticate
            self._open_cell(circ.circuit_id, circ.end, frame.cell, side)
            return
        if side == circ.prev:
            assert circ.next is not None
            data = relay_forward(self.geometry, circ.keys, circ.fwd, frame.cell)
            circ.fwd += 1
            out = circ.next
        else:
            data = relay_backward(self.geometry, circ.keys, circ.bwd, frame.cell)
            circ.bwd += 1
            out = circ.prev
        self._emit(out[0], lf.encode_cell(out[1], data), out)
        self.cells_relayed += 1

    def _open_cell(self, circuit_id: int, end: CircuitEnd, data: bytes, side: Side) -> None:
        try:
            events = end.open_cell(data)
        except RemoteProtocolError as exc:
            log.info("circuit=%d event=teardown reason=%r", circuit_id, str(exc))
            self._teardown(side, exc.code)
            return
        for event in events:
            self._events.append(CircuitStreamEvent(circuit_id, event))
        self._pump(circuit_id)

    def _on_destroy(self, link: _Link, frame: lf.Destroy) -> None:
        side = (link.link_id, frame.circ_id)
        if side in self._circuits:
            self._teardown(side, frame.code, from_peer=True)

    def _teardown(self, side: Side, code: CloseCode, *, from_peer: bool = False) -> None:
        """Destroy the circuit at ``side`` and tell the neighbours that remain."""
        circ = self._circuits.get(side)
        if circ is None:
            return
        if isinstance(circ, _ClientCircuit):
            if not from_peer:
                self._send_if_linked(circ.out, lf.Destroy(circ.out[1], code))
            self._drop_client(circ, code)
            return
        for s in (circ.prev, circ.next):
            if s is None:
                continue
            self._circuits.pop(s, None)
            link = self._links.get(s[0])
            if link is not None:
                link.circ_ids.discard(s[1])
            if s != side or not from_peer:
                self._send_if_linked(s, lf.Destroy(s[1], code))
        if circ.end is not None:
            del self._endpoints[circ.circuit_id]
            self._events.append(CircuitClosed(circ.circuit_id, code))

    def _send_if_linked(self, side: Side, frame: lf.Frame) -> None:
        if side[0] in self._links:
            self._send(side[0], frame)

    # -- client ---------------------------------------------------------------------
    def _new_circuit_id(self) -> int:
        cid = self._next_circuit
        self._next_circuit += 1
        return cid

    def build_circuit(self, path: list[Descriptor], now: float) -> int:
        """Start building a circuit through ``path`` (verified descriptors, first hop linked).

        Returns the local circuit id; :class:`CircuitBuilt` follows one round trip later.
        """
        self._now = now
        if not 1 <= len(path) <= self.geometry.max_hops:
            raise LocalProtocolError(f"a path has 1 to {self.geometry.max_hops} hops")
        link_id = self.link_to(path[0].node_id)
        if link_id is None:
            raise LocalProtocolError("no open link to the first hop")
        hops = [sphinx.PathHop(d.node_id, d.onion_epoch, d.onion_pk) for d in path]
        setup = sphinx.build_setup_header(self.geometry, hops, self._rng)
        link = self._links[link_id]
        out = (link_id, self._alloc_circ_id(link))
        circ = _ClientCircuit(self._new_circuit_id(), out, setup, now + self.config.build_timeout)
        self._clients[circ.circuit_id] = circ
        self._circuits[out] = circ
        self._send(link_id, lf.Create(out[1], path[0].onion_epoch, setup.header))
        return circ.circuit_id

    def _drop_client(self, circ: _ClientCircuit, code: CloseCode) -> None:
        self._circuits.pop(circ.out, None)
        self._clients.pop(circ.circuit_id, None)
        link = self._links.get(circ.out[0])
        if link is not None:
            link.circ_ids.discard(circ.out[1])
        self._events.append(CircuitClosed(circ.circuit_id, code))

    def client_circuits(self) -> set[int]:
        """Ids of this node's built (open) client circuits."""
        return {cid for cid, c in self._clients.items() if c.end is not None}

    def relayed_circuits(self) -> int:
        """How many circuits pass through this node (as a relay or as their final hop)."""
        return len({id(c) for c in self._circuits.values() if isinstance(c, _Hop)})

    def close_circuit(self, circuit_id: int) -> None:
        circ = self._clients.get(circuit_id)
        if circ is None:
            raise LocalProtocolError(f"no circuit {circuit_id}")
        self._teardown(circ.out, CloseCode.REQUESTED)

    def _end(self, circuit_id: int) -> tuple[CircuitEnd, Side]:
        client = self._clients.get(circuit_id)
        if client is not None and client.end is not None:
            return client.end, client.out
        hop = self._endpoints.get(circuit_id)
        if hop is not None and hop.end is not None:
            return hop.end, hop.prev
        raise LocalProtocolError(f"circuit {circuit_id} is not open here")

    def open_stream(self, circuit_id: int, target: str) -> int:
        end, _ = self._end(circuit_id)
        if not isinstance(end, ClientEnd):
            raise LocalProtocolError("only the circuit's client opens streams")
        stream = end.new_stream(target)
        self._pump(circuit_id)
        return stream.stream_id

    def send(self, circuit_id: int, stream_id: int, data: bytes) -> None:
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"no stream {stream_id}")
        stream.write(data)
        self._pump(circuit_id)

    def finish(self, circuit_id: int, stream_id: int) -> None:
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        if stream is None:
            raise LocalProtocolError(f"no stream {stream_id}")
        stream.finish()
        self._pump(circuit_id)

    def consume(self, circuit_id: int, stream_id: int, n: int) -> None:
        """With ``auto_consume`` off: the application took ``n`` bytes of a stream."""
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        if stream is not None:
            stream.consume(n)
            self._pump(circuit_id)

    def stream_buffered(self, circuit_id: int, stream_id: int) -> int:
        """Bytes written to a stream and not yet sent (the sender's backpressure signal)."""
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        return stream.pending if stream is not None else 0

    def accept_stream(self, circuit_id: int, stream_id: int) -> None:
        """At a circuit's endpoint: the stream's target is reached (sends CONNECTED)."""
        end, _ = self._end(circuit_id)
        end.accept_stream(stream_id)
        self._pump(circuit_id)

    def reset(self, circuit_id: int, stream_id: int, code: int = 0) -> None:
        end, _ = self._end(circuit_id)
        end.reset_stream(stream_id, code)
        self._pump(circuit_id)

    def _pump(self, circuit_id: int) -> None:
        end, side = self._end(circuit_id)
        for cell_bytes in end.cells_to_send():
            self._emit(side[0], lf.encode_cell(side[1], cell_bytes), side)


__all__ = [
    "CircuitBuilt",
    "CircuitClosed",
    "CircuitStreamEvent",
    "DescriptorLearned",
    "Event",
    "LinkClosed",
    "LinkUp",
    "Node",
    "NodeConfig",
    "RelayView",
    "SignalReceived",
    "StreamConnected",
    "StreamData",
    "StreamFinished",
    "StreamOpened",
    "StreamReset",
]
