"""The node: composes links, the relay table, the circuit builder, the directory and signals.

Theory of operation (aioquic's pattern).  A driver owns the transports and the clock and
talks to one :class:`Node`:

* inputs, each taking ``now``: :meth:`Node.open_link`, :meth:`Node.receive`,
  :meth:`Node.link_closed`, :meth:`Node.handle_timer`, and the application API
  (:meth:`Node.build_circuit`, :meth:`Node.open_stream`, :meth:`Node.send`, ...);
* outputs, pulled after every input: :meth:`Node.datagrams_to_send` (bytes per link),
  :meth:`Node.get_timer` (one deadline) and :meth:`Node.next_event` (events, and effects
  such as :class:`DialWanted` that the driver carries out).

The node holds no protocol state of its own.  Each component has the same outer shape
(``handle_timer(now)``, ``get_timer()``, ``next_event()``, inputs taking ``now``):

* :class:`~zmesh.link.connection.LinkConnection`: one per link (handshake, decoder,
  credit, keepalive, its own send queue), in a shared :class:`~zmesh.link.table.LinkTable`;
* :class:`~zmesh.circuit.relay.RelayTable`: circuits we relay or end;
* :class:`~zmesh.circuit.builder.CircuitBuilder`: circuits we own;
* :class:`~zmesh.directory.Directory`: descriptors, by gossip;
* :class:`~zmesh.signaling.router.SignalRouter`: signaling through neighbours.

Frames reach them through :data:`_ROUTES`, a table keyed by frame type with an "allowed
before the handshake" column.  Frames for a circuit go to the component that owns its id
on the link; a frame for a circuit that closed is dropped quietly, one for an id that never
existed is a protocol error.

Error boundary: a :class:`RemoteProtocolError` from a link frame closes that link (as does a
link whose :attr:`~zmesh.link.connection.LinkConnection.failure` is set); one from a
circuit's setup or cells destroys that circuit.  Nothing else escapes :meth:`receive`.
"""

import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .circuit.builder import CircuitBuilder
from .circuit.common import (
    BUILD_TIMEOUT,
    IDLE_TIMEOUT,
    CircuitBuilt,
    CircuitClosed,
    CircuitConfig,
    CircuitStreamEvent,
    HopOpened,
)
from .circuit.relay import RelayTable
from .directory import DescriptorLearned, Directory
from .errors import CloseCode, LocalProtocolError, RemoteProtocolError
from .identity import Descriptor, Flags, Identity, short_id
from .link import frames as lf
from .link.connection import LinkClosed, LinkConnection, LinkLimits, LinkUp
from .link.handshake import LinkHandshake
from .link.table import LinkTable
from .onion.geometry import DEFAULT_GEOMETRY, Geometry
from .onion.keyring import DEFAULT_EPOCH_LENGTH, OnionKeyRing
from .rng import Rng
from .session.endpoint import (
    CircuitEnd,
    ClientEnd,
    StreamConnected,
    StreamData,
    StreamFinished,
    StreamOpened,
    StreamReset,
)
from .session.stream import Stream
from .signaling.router import SignalReceived, SignalRouter

log = logging.getLogger("zmesh.node")

DESCRIPTOR_LIFETIME = 3 * 3600
MAX_INBOUND_LINKS = 256  # links peers opened to us, handshaking or up
DIAL_TIMEOUT = 45.0  # a dial we asked for and heard nothing of is forgotten after this


@dataclass(frozen=True, slots=True)
class DialWanted:
    """Effect: link to this relay (signal it an offer); answer with :meth:`Node.dial_failed`
    if it fails.  Policy: relays only, below ``max_links``, and the lower id dials."""

    descriptor: Descriptor


Event = (
    LinkUp
    | LinkClosed
    | CircuitBuilt
    | CircuitClosed
    | CircuitStreamEvent
    | HopOpened
    | DescriptorLearned
    | SignalReceived
    | DialWanted
)


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
    credit_timeout: float = 30.0  # close a link whose peer holds our credit this long
    build_timeout: float = BUILD_TIMEOUT
    idle_timeout: float = IDLE_TIMEOUT  # destroy relayed circuits with no cell this long
    #: False when the application reports what it consumed (Node.consume): receive windows
    #: then slide only as fast as it reads, e.g. as fast as a TCP socket drains
    auto_consume: bool = True
    max_links: int = 0  # relays to link to on our own (DialWanted); 0: only when told
    max_inbound_links: int = MAX_INBOUND_LINKS


@dataclass(frozen=True, slots=True)
class _Route:
    handler: Callable[["Node", LinkConnection, lf.Frame, float], None]
    before_handshake: bool
    after_handshake: bool = True


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
        self._links = LinkTable()
        ids = itertools.count(1)
        cfg = self.config
        cc = CircuitConfig(cfg.stream_window, cfg.build_timeout, cfg.idle_timeout, cfg.auto_consume)
        self._limits = LinkLimits(cfg.keepalive, cfg.link_timeout, cfg.credit_timeout)
        self.relay = RelayTable(
            self._links, self.keyring, self.geometry, rng, config=cc, ids=ids, now=now
        )
        self.builder = CircuitBuilder(self._links, self.geometry, rng, config=cc, ids=ids)
        self.directory = Directory(self.node_id, self._links, now)
        self.signals = SignalRouter(self.node_id, self._links, self.directory.route)
        self._sources = (self.relay, self.builder, self.directory, self.signals)
        self._events: deque[Event] = deque()
        self._descriptor: Descriptor | None = None
        self._dialing: dict[bytes, float] = {}  # node id -> when we give up waiting
        self._closing: list[tuple[int, bytes]] = []  # CLOSE frames of links already gone

    # -- identity and queries ---------------------------------------------------------
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

    @property
    def cells_relayed(self) -> int:
        return self.relay.cells_relayed

    def link_to(self, node_id: bytes) -> int | None:
        """An open link to ``node_id`` (the first one, if both sides dialled)."""
        conn = self._links.to_peer(node_id)
        return None if conn is None else conn.link_id

    def peers(self) -> list[bytes]:
        return self._links.peers()

    def client_circuits(self) -> set[int]:
        """Ids of this node's built (open) client circuits."""
        return self.builder.built()

    def relayed_circuits(self) -> int:
        """How many circuits pass through this node (as a relay or as their final hop)."""
        return len(self.relay)

    # -- driver outputs -------------------------------------------------------------
    def datagrams_to_send(self, now: float) -> list[tuple[int, bytes]]:
        """Bytes to send, per link, in order."""
        out, self._closing = self._closing, []
        ready = self._links.watch.ready
        while ready:
            link_id = next(iter(ready))
            del ready[link_id]
            conn = self._links.get(link_id)
            if conn is not None:
                out.extend((link_id, data) for data in conn.datagrams_to_send())
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float:
        deadline = min(
            self._next_rotation,
            self.relay.get_timer(),
            self.builder.get_timer(),
            self.directory.get_timer(),
            min(self._dialing.values(), default=float("inf")),
        )
        return min((c.get_timer() for c in self._links), default=deadline)

    def handle_timer(self, now: float) -> None:
        for conn in self._links:
            conn.handle_timer(now)
        self.relay.handle_timer(now)
        self.builder.handle_timer(now)
        self.directory.handle_timer(now)
        for node_id in [k for k, t in self._dialing.items() if now >= t]:
            del self._dialing[node_id]
        if now >= self._next_rotation:
            self.keyring.rotate(now)
            self._next_rotation = self.keyring.next_rotation(now)
            if self.config.gossip:
                self.directory.announce(self.descriptor(now), now)
        self._settle(now)

    def _settle(self, now: float) -> None:
        """After every input: close failed links, collect the components' events."""
        failed = self._links.watch.failed
        while failed:
            conn = self._links.get(next(iter(failed)))
            assert conn is not None and conn.failure is not None
            reason, code = conn.failure
            log.info("link=%d event=close reason=%r", conn.link_id, reason)
            self._close_link(conn, code, now)
        for source in self._sources:
            while (event := source.next_event()) is not None:
                self._events.append(event)
                if isinstance(event, DescriptorLearned):
                    self._consider_dial(event.descriptor, now)

    # -- links ----------------------------------------------------------------------
    def open_link(
        self, link_id: int, now: float, *, binding: bytes, peer: Descriptor | None = None
    ) -> None:
        """A transport opened.  ``peer`` is given when we initiated it (we know whom we
        dialled); otherwise we wait for the peer's HELLO1.  Inbound links beyond
        ``max_inbound_links`` are closed at once (RESOURCE)."""
        hs = LinkHandshake(
            self.identity,
            initiator=peer is not None,
            binding=binding,
            rng=self._rng,
            expected_peer_kem_pk=peer.identity_kem_pk if peer else None,
            expected_peer_id=peer.node_id if peer else None,
        )
        links = self._links
        conn = LinkConnection(
            link_id, hs, self.geometry, now, limits=self._limits, watch=links.watch
        )
        full = peer is None and links.inbound() >= self.config.max_inbound_links
        links.add(conn)
        if full:
            conn.fail("too many inbound links", CloseCode.RESOURCE)
        elif peer is not None:
            conn.send(hs.start(), now)
        self._settle(now)

    def link_closed(self, link_id: int, now: float) -> None:
        """The transport closed under us."""
        conn = self._links.get(link_id)
        if conn is not None:
            self._close_link(conn, CloseCode.CONNECTION_FAILED, now, notify=False)
            self._settle(now)

    def _close_link(
        self, conn: LinkConnection, code: CloseCode, now: float, *, notify: bool = True
    ) -> None:
        if self._links.get(conn.link_id) is not conn:
            return
        if notify:
            conn.send(lf.Close(code), now)
            # what was queued within credit, and the CLOSE, still go out
            self._closing.extend((conn.link_id, d) for d in conn.datagrams_to_send())
        self.relay.link_closed(conn, now)
        self.builder.link_closed(conn, now)
        self._links.remove(conn)
        self.directory.link_closed(conn.link_id)
        self.signals.link_closed(conn.link_id)
        self._events.append(LinkClosed(conn.link_id, conn.peer_id, code))

    def receive(self, link_id: int, data: bytes, now: float) -> None:
        """Bytes arrived on a link."""
        conn = self._links.get(link_id)
        if conn is None:
            return
        try:
            counted = 0
            for frame in conn.feed(data, now):
                route = _ROUTES[type(frame)]
                if not (route.after_handshake if conn.up else route.before_handshake):
                    raise RemoteProtocolError(
                        f"{type(frame).__name__} frame out of place", CloseCode.HANDSHAKE
                    )
                counts = conn.admit(frame)
                route.handler(self, conn, frame, now)
                if self._links.get(link_id) is not conn:
                    break
                counted += counts
            else:
                conn.processed_frames(counted)
        except RemoteProtocolError as exc:
            log.info("link=%d event=close reason=%r", link_id, str(exc))
            self._close_link(conn, exc.code, now)
        self._settle(now)

    # -- frame handlers -------------------------------------------------------------
    def _on_handshake(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        reply = conn.handshake.receive(frame)
        if reply is not None:
            conn.send(reply, now)
        if conn.handshake.done:
            conn.peer_id = conn.handshake.peer_id
            assert conn.peer_id is not None
            conn.last_tx = conn.last_rx = now
            self._links.mark_up(conn)
            self._dialing.pop(conn.peer_id, None)
            log.debug("link=%d event=up peer=%s", conn.link_id, short_id(conn.peer_id))
            self._events.append(LinkUp(conn.link_id, conn.peer_id))
            if self.config.gossip:
                self.directory.link_up(conn, self.descriptor(now), now)

    def _on_close(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Close)
        self._close_link(conn, frame.code, now, notify=False)

    def _on_credit(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Credit)
        conn.receive_credit(frame.frames, now)
        self.directory.pump(now)

    def _on_padding(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        """Keepalives and cover: the receive itself refreshed the link."""

    def _on_create(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Create)
        self.relay.on_create(conn, frame, now)

    def _owner(
        self, conn: LinkConnection, frame: lf.Created | lf.Cell | lf.Destroy
    ) -> RelayTable | CircuitBuilder | None:
        """The table that owns the frame's circuit; None for a circuit that closed (a race
        with a DESTROY, not an attack).  RemoteProtocolError for an id that never existed."""
        owner = conn.circuits.get(frame.circ_id)
        if owner == "relay":
            return self.relay
        if owner == "client":
            return self.builder
        if conn.circuit_state(frame.circ_id) is None and not isinstance(frame, lf.Destroy):
            raise RemoteProtocolError(f"{type(frame).__name__} for an unknown circuit")
        return None  # closed, or a DESTROY crossing ours

    def _on_cell(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Cell)
        if (table := self._owner(conn, frame)) is not None:
            table.on_cell(conn, frame, now)

    def _on_created(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Created)
        if (table := self._owner(conn, frame)) is not None:
            table.on_created(conn, frame, now)

    def _on_destroy(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Destroy)
        if (table := self._owner(conn, frame)) is not None:
            table.on_destroy(conn, frame, now)

    def _on_descriptor(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.DescriptorFrame)
        self.directory.on_descriptor(conn, frame, now)

    def _on_signal(self, conn: LinkConnection, frame: lf.Frame, now: float) -> None:
        assert isinstance(frame, lf.Signal)
        self.signals.on_signal(conn, frame, now)

    # -- dialling -------------------------------------------------------------------
    def _consider_dial(self, desc: Descriptor, now: float) -> None:
        node_id = desc.node_id
        if (
            not desc.flags & Flags.RELAY
            or node_id in self._dialing
            or self._links.to_peer(node_id) is not None
            or len(self._links.peers()) + len(self._dialing) >= self.config.max_links
            or self.node_id > node_id
        ):
            return
        self._dialing[node_id] = now + DIAL_TIMEOUT
        self._events.append(DialWanted(desc))

    def dial_failed(self, node_id: bytes, now: float) -> None:
        """A :class:`DialWanted` could not be carried out."""
        self._dialing.pop(node_id, None)

    def learn_descriptor(self, desc: Descriptor, now: float) -> None:
        """A descriptor obtained out of band (bootstrap); RemoteProtocolError if invalid."""
        self.directory.add(desc, now)
        self._settle(now)

    def send_signal(self, target: bytes, payload: bytes, now: float) -> bool:
        """Send a signaling payload to ``target`` through the mesh; False if no route."""
        return self.signals.send(target, payload, now)

    # -- circuits and streams --------------------------------------------------------
    def build_circuit(self, path: list[Descriptor], now: float) -> int:
        """Start building a circuit through ``path`` (verified descriptors, first hop linked).

        Returns the local circuit id; :class:`CircuitBuilt` follows one round trip later.
        """
        return self.builder.build(path, now)

    def close_circuit(self, circuit_id: int, now: float) -> None:
        table = self.builder if circuit_id in self.builder else self.relay
        table.close(circuit_id, now)
        self._settle(now)

    def _end(self, circuit_id: int) -> tuple[CircuitEnd, RelayTable | CircuitBuilder]:
        end: CircuitEnd | None = self.builder.end(circuit_id)
        if end is not None:
            return end, self.builder
        end = self.relay.end(circuit_id)
        if end is not None:
            return end, self.relay
        raise LocalProtocolError(f"circuit {circuit_id} is not open here")

    def _stream_call(
        self, circuit_id: int, now: float, action: Callable[[CircuitEnd], None]
    ) -> None:
        end, owner = self._end(circuit_id)
        action(end)
        owner.pump(circuit_id, now)
        self._settle(now)

    def open_stream(self, circuit_id: int, target: str, now: float) -> int:
        end, _ = self._end(circuit_id)
        if not isinstance(end, ClientEnd):
            raise LocalProtocolError("only the circuit's client opens streams")
        sid = end.new_stream(target).stream_id
        self._stream_call(circuit_id, now, lambda e: None)
        return sid

    def send(self, circuit_id: int, stream_id: int, data: bytes, now: float) -> None:
        self._stream_call(circuit_id, now, lambda e: _stream(e, stream_id).write(data))

    def finish(self, circuit_id: int, stream_id: int, now: float) -> None:
        self._stream_call(circuit_id, now, lambda e: _stream(e, stream_id).finish())

    def consume(self, circuit_id: int, stream_id: int, n: int, now: float) -> None:
        """With ``auto_consume`` off: the application took ``n`` bytes of a stream."""

        def consume(end: CircuitEnd) -> None:
            stream = end.streams.get(stream_id)
            if stream is not None:  # it may have ended meanwhile
                stream.consume(n)

        self._stream_call(circuit_id, now, consume)

    def accept_stream(self, circuit_id: int, stream_id: int, now: float) -> None:
        """At a circuit's endpoint: the stream's target is reached (sends CONNECTED)."""
        self._stream_call(circuit_id, now, lambda e: e.accept_stream(stream_id))

    def reset(self, circuit_id: int, stream_id: int, code: int, now: float) -> None:
        self._stream_call(circuit_id, now, lambda e: e.reset_stream(stream_id, code))

    def stream_buffered(self, circuit_id: int, stream_id: int) -> int:
        """Bytes written to a stream and not yet sent (the sender's backpressure signal)."""
        end, _ = self._end(circuit_id)
        stream = end.streams.get(stream_id)
        return stream.pending if stream is not None else 0


def _stream(end: CircuitEnd, stream_id: int) -> Stream:
    stream = end.streams.get(stream_id)
    if stream is None:
        raise LocalProtocolError(f"no stream {stream_id}")
    return stream


_ROUTES: dict[type, _Route] = {
    lf.Hello1: _Route(Node._on_handshake, before_handshake=True, after_handshake=False),
    lf.Hello2: _Route(Node._on_handshake, before_handshake=True, after_handshake=False),
    lf.Hello3: _Route(Node._on_handshake, before_handshake=True, after_handshake=False),
    lf.Close: _Route(Node._on_close, before_handshake=True),
    lf.Credit: _Route(Node._on_credit, before_handshake=False),
    lf.Padding: _Route(Node._on_padding, before_handshake=False),
    lf.Create: _Route(Node._on_create, before_handshake=False),
    lf.Created: _Route(Node._on_created, before_handshake=False),
    lf.Cell: _Route(Node._on_cell, before_handshake=False),
    lf.Destroy: _Route(Node._on_destroy, before_handshake=False),
    lf.DescriptorFrame: _Route(Node._on_descriptor, before_handshake=False),
    lf.Signal: _Route(Node._on_signal, before_handshake=False),
}


def drain(
    node: Node, now: float, send: Callable[[int, bytes], None], on_event: Callable[[Event], None]
) -> float:
    """The driver's step after every input: bytes to ``send``, events to ``on_event``.

    Returns the deadline for the driver's one timer (aioquic's pattern)."""
    for link_id, data in node.datagrams_to_send(now):
        send(link_id, data)
    while (event := node.next_event()) is not None:
        on_event(event)
    return node.get_timer()


__all__ = [
    "CircuitBuilt",
    "CircuitClosed",
    "CircuitStreamEvent",
    "DescriptorLearned",
    "DialWanted",
    "Event",
    "HopOpened",
    "LinkClosed",
    "LinkUp",
    "Node",
    "NodeConfig",
    "SignalReceived",
    "StreamConnected",
    "StreamData",
    "StreamFinished",
    "StreamOpened",
    "StreamReset",
    "drain",
]
